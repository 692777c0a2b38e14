"""Train a binary network the BinaryConnect way (sign with straight-through gradients,
Adam), finalize it, convert it.

    python examples/ste.py --epochs 3
"""

import sys

import numpy as np
from _data import arguments, load

import tfquant
from tfquant import converters, zoo
from tfquant._keras import keras


def main(argv=None) -> dict:
    args = arguments(__doc__, epochs=3)(argv)
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
