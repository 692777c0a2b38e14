"""Training methods of the papers that are more than an optimizer.

* :mod:`tfquant.methods.binary_relax`: BinaryRelax (Yin et al. 2018), a relaxed quantizer
  with a continuation schedule on its weight, then exact quantization.
* :mod:`tfquant.methods.tsq`: Two-Step Quantization (Wang et al. 2018), step 2's NumPy
  solver for ternary weights by response reconstruction (its activation quantizer is
  :class:`tfquant.quantizers.SparseQuantizer`).
"""

from tfquant.methods import binary_relax, tsq

__all__ = ["binary_relax", "tsq"]
