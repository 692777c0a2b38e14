"""Train a binary network with BinaryRelax (relaxation, then exact quantization), convert it.

python examples/binary_relax.py --epochs 3
"""

import sys

import keras
from _common import arguments, evaluate_and_convert, load

import tfquant
from tfquant import zoo
from tfquant.methods import binary_relax


def main(argv=None) -> dict:
    args = arguments(__doc__, epochs=3, argv=argv)
    (xtr, ytr), (xte, yte) = load(args.dataset, args.limit)
    model = zoo.bireal_cnn(input_shape=xtr.shape[1:], kernel_quantizer="scaled_sign")
    # Forward (x + lambda Q(x)) / (1 + lambda); lambda x100 over the first epochs, then the
    # last epoch with Q(x) exactly and a 10x smaller learning rate.
    callbacks = binary_relax.apply(
        model,
        lambda_init=1.0,
        growth=100.0 ** (1.0 / max(args.epochs - 1, 1)),
        phase_two_epoch=args.epochs - 1 if args.epochs > 1 else None,
        lr_multiplier=0.1 if args.epochs > 1 else None,
        epochs=args.epochs,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(xtr, ytr, epochs=args.epochs, batch_size=128, callbacks=callbacks, verbose=2)
    tfquant.finalize(model, xtr[:2560])
    return evaluate_and_convert(model, xte, yte, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
