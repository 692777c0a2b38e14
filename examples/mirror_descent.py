"""Train a binary network with mirror descent (MD-tanh-S), finalize it, convert it.

python examples/mirror_descent.py --epochs 3
"""

import sys

import numpy as np
from _data import arguments, load

import tfquant
from tfquant import converters, zoo


def main(argv=None) -> dict:
    args = arguments(__doc__, epochs=3)(argv)
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
    accuracy = float(np.mean(np.argmax(model.predict(xte, verbose=0), -1) == yte))
    flatbuffer = converters.convert(model)
    if args.out:
        converters.write_atomic(f"{args.out}/model.tflite", flatbuffer)
    ops = converters.inspect.op_counts(flatbuffer)
    print(
        f"hard-quantized test accuracy {accuracy:.4f}; LceBconv2d ops: {ops.get('LceBconv2d', 0)}"
    )
    return {"accuracy": accuracy, "ops": ops}


if __name__ == "__main__":
    main(sys.argv[1:])
