"""Training methods of the papers that are more than an optimizer.

* :mod:`tfquant.methods.binary_relax`: BinaryRelax (Yin et al. 2018), a relaxed quantizer
  with a continuation schedule on its weight, then exact quantization.
"""

from tfquant.methods import binary_relax

__all__ = ["binary_relax"]
