"""Print tfquant's size and compute figures of every zoo network as JSON (no training).

Each network is built at full width and its paper's input size with ``tfquant.zoo.build``
for ``--method`` (default ``ste``: the binary form) and measured with
``tfquant.summary``: total parameters (BatchNorm moving statistics included), parameters by
bit width, trainable parameters, bit-packed size, float32 size, and MACs by kind (binary /
low-bit / float).

    .venv/bin/python benchmarks/zoo_summary.py              # binary forms
    .venv/bin/python benchmarks/zoo_summary.py --method tsq # ternary weights, 2-bit inputs
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import tfquant  # noqa: E402
from tfquant import zoo  # noqa: E402

# name -> (build kwargs, paper / reference data set)
NETWORKS = {
    "binary_cnn": ({"input_shape": (28, 28, 1), "classes": 10}, "MNIST-size"),
    "bireal_cnn": ({"input_shape": (28, 28, 1), "classes": 10}, "MNIST-size"),
    "resnet18_cifar": (
        {"name": "resnet18", "input_shape": (32, 32, 3), "classes": 10},
        "CIFAR-10 (MD paper)",
    ),
    "resnet18_imagenet": (
        {"name": "resnet18", "input_shape": (224, 224, 3), "classes": 1000},
        "ImageNet (Bi-Real / larq-zoo, CPQ)",
    ),
    "vgg7": ({"input_shape": (32, 32, 3), "classes": 10}, "CIFAR-10 (RQ, CPQ)"),
    "lenet5": ({"input_shape": (28, 28, 1), "classes": 10}, "MNIST (RQ, CPQ)"),
    "alexnet_bn": ({"input_shape": (227, 227, 3), "classes": 1000}, "ImageNet (TSQ)"),
    "quicknet_small": ({"input_shape": (224, 224, 3), "classes": 1000}, "ImageNet (larq-zoo)"),
}


def measure(key: str, method: str) -> dict:
    kwargs, data = NETWORKS[key]
    kwargs = dict(kwargs)
    name = kwargs.pop("name", key)
    model = zoo.build(name, method=method, **kwargs)
    s = tfquant.summary(model, print_fn=None)
    by_bits: dict[int, int] = {}
    for layer in s.layers:
        for bits, n in layer.params.items():
            by_bits[bits] = by_bits.get(bits, 0) + n
    return {
        "network": key,
        "model": name,
        "method": method,
        "data": data,
        "input_shape": list(model.input_shape[1:]),
        "classes": int(model.output_shape[-1]),
        "total_params": s.total_params,
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "params_by_bits": {str(b): n for b, n in sorted(by_bits.items())},
        "bitpacked_bytes": s.memory_bytes,
        "float32_bytes": s.float32_bytes,
        "compression": round(s.compression, 3),
        "macs": s.macs,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default="ste", choices=sorted(zoo.METHOD_QUANTIZERS))
    p.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    args = p.parse_args(argv)
    print(json.dumps([measure(key, args.method) for key in args.networks], indent=1))


if __name__ == "__main__":
    main()
