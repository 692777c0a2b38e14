"""Train a binary network the BinaryConnect way (sign with straight-through gradients,
Adam), finalize it, convert it.

    python examples/ste.py --epochs 3
"""

import sys

import keras
from _common import arguments, evaluate_and_convert, load

import tfquant
from tfquant import zoo


def main(argv=None) -> dict:
    args = arguments(__doc__, epochs=3, argv=argv)
    (xtr, ytr), (xte, yte) = load(args.dataset, args.limit)
    model = zoo.bireal_cnn(input_shape=xtr.shape[1:], kernel_quantizer="ste_sign")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(xtr, ytr, epochs=args.epochs, batch_size=128, verbose=2)
    tfquant.finalize(model, xtr[:2560])
    tfquant.summary(model)
    return evaluate_and_convert(model, xte, yte, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
