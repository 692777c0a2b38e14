"""Train a binary network with mirror descent (MD-tanh-S), finalize it, convert it.

python examples/mirror_descent.py --epochs 3
"""

import sys

from _common import arguments, evaluate_and_convert, load

import tfquant
from tfquant import zoo


def main(argv=None) -> dict:
    args = arguments(__doc__, epochs=3, argv=argv)
    (xtr, ytr), (xte, yte) = load(args.dataset, args.limit)
    model = zoo.bireal_cnn(input_shape=xtr.shape[1:], kernel_quantizer="ste_sign")
    # Every quantized kernel is trained by mirror descent; BatchNorm and float layers by Adam.
    model.compile(
        optimizer=tfquant.MirrorDescent(),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # BetaAnnealing: beta goes from 1 to beta_max over exactly this fit, so the net ends hard.
    model.fit(
        xtr,
        ytr,
        epochs=args.epochs,
        batch_size=128,
        callbacks=[tfquant.callbacks.BetaAnnealing()],
        verbose=2,
    )
    tfquant.finalize(model, xtr[:2560])  # kernels = sign(dual); BatchNorm re-estimated
    return evaluate_and_convert(model, xte, yte, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
