"""Optimizers for quantized networks: :class:`MirrorDescent` and its pure math
(:mod:`tfquant.optimizers.mirror_maps`)."""

from tfquant.optimizers import mirror_maps
from tfquant.optimizers.mirror_descent import MirrorDescent

__all__ = ["MirrorDescent", "mirror_maps"]
