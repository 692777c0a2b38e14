"""Quantizers: pure STE functions plus thin serializable classes.

Each class is a Keras layer (so a quantizer can own variables, e.g. a learned grid or a
relaxation weight, that become weights of the layer using it) registered under the package
``"tfquant"``, with a snake_case string alias. Every class declares

* ``precision``: bits per value when stored (1 for binary, 2 for ternary, k for k-bit);
* ``grid``: a :class:`Grid`, the values it outputs as data (step, code range, signedness,
  ties, whether the step is data dependent or learned), which is all the converter reads;
* and from it ``levels`` (the values, e.g. ``(-1.0, 1.0)``) and ``scaled`` (whether they
  are multiplied by a scale that is not a constant).

Modules: :mod:`~tfquant.quantizers.base` (the contract), :mod:`~tfquant.quantizers.sign`
(binary, ternary), :mod:`~tfquant.quantizers.uniform` (DoReFa),
:mod:`~tfquant.quantizers.sparse` (TSQ), :mod:`~tfquant.quantizers.cpq` (CPQ / DropBits),
:mod:`~tfquant.quantizers.registry` (aliases, ``get``, ``serialize``), over the pure
functions of ``_ste``. This package may import ``tfquant._keras`` and ``tfquant.errors``.

Example:

>>> import numpy as np
>>> import tfquant
>>> q = tfquant.quantizers.get("ste_sign")
>>> q(np.array([-0.3, 0.0, 2.0], "float32")).numpy().tolist()
[-1.0, 1.0, 1.0]
>>> q.levels
(-1.0, 1.0)
>>> q.grid.codes, q.grid.zero_code
((-1, 1), False)
"""

from __future__ import annotations

from tfquant.quantizers._ste import (
    approx_sign,
    scaled_sign,
    sparse_quantize,
    ste_round,
    ste_sign,
    ste_ternary,
    uniform_quantize,
)
from tfquant.quantizers.base import Grid, Quantizer
from tfquant.quantizers.cpq import CPQQuantizer, cpq_quantize
from tfquant.quantizers.registry import (
    ALIASES,
    get,
    register_alias,
    registered,
    serialize,
    snake_case,
)
from tfquant.quantizers.sign import ApproxSign, ScaledSign, SteSign, SteTernary
from tfquant.quantizers.sparse import SparseQuantizer, optimal_step, sparse_fixed_point
from tfquant.quantizers.uniform import UniformQuantizer

__all__ = [
    "Grid",
    "Quantizer",
    "SteSign",
    "ApproxSign",
    "ScaledSign",
    "SteTernary",
    "UniformQuantizer",
    "SparseQuantizer",
    "CPQQuantizer",
    "optimal_step",
    "sparse_fixed_point",
    "get",
    "serialize",
    "register_alias",
    "registered",
    "ALIASES",
    "ste_sign",
    "approx_sign",
    "scaled_sign",
    "ste_ternary",
    "ste_round",
    "uniform_quantize",
    "sparse_quantize",
    "cpq_quantize",
]

for _cls in (SteSign, ApproxSign, ScaledSign, SteTernary, UniformQuantizer, SparseQuantizer):
    register_alias(snake_case(_cls.__name__), _cls)
register_alias("cpq", CPQQuantizer)
del _cls
