"""DoReFa-Net's k-bit uniform quantizer, for activations and for weights.

May import: ``tfquant.quantizers.base``, ``tfquant.quantizers._ste`` and ``tfquant._keras``.
"""

from __future__ import annotations

from typing import Any

from tfquant._keras import keras
from tfquant.errors import ConfigError
from tfquant.quantizers._ste import uniform_quantize
from tfquant.quantizers.base import Grid, Quantizer

__all__ = ["UniformQuantizer"]


_UNIFORM_MODES = ("activation", "weight")


@keras.utils.register_keras_serializable(package="tfquant")
class UniformQuantizer(Quantizer):
    r"""k-bit uniform quantizer (DoReFa-Net) for activations or weights.

    Args:
        bits: bits per value, 1 to 32.
        mode: ``"activation"``: clip to [0, 1], levels :math:`\{j / (2^k - 1)\}`;
            ``"weight"``: DoReFa's tanh-normalised weights, levels
            :math:`\{-1 + 2j / (2^k - 1)\}`. The max-normalisation makes this mode not
            idempotent (a constant tensor maps to +-1), which is why ``tfquant.finalize``
            stores ``Q(w)`` and forwards it unchanged.
    """

    def __init__(self, bits: int = 2, mode: str = "activation", **kwargs: Any) -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
            raise ConfigError(f"Expected bits an integer in [1, 32]. Received: bits={bits!r}")
        if mode not in _UNIFORM_MODES:
            raise ConfigError(f"Expected mode in {_UNIFORM_MODES}. Received: mode={mode!r}")
        self.bits = bits
        self.mode = mode
        super().__init__(**kwargs)

    @property
    def precision(self) -> int:  # type: ignore[override]
        return self.bits

    @property
    def grid(self) -> Grid | None:
        """Activations: codes 0..n of step 1/n (n = 2^bits - 1); weights: the odd codes
        -n..n of step 1/n, i.e. values -1 + 2j/n. Rounding is half away from zero. ``None``
        above 8 bits (no int8 grid)."""
        if self.bits > 8:
            return None
        n = 2**self.bits - 1
        if self.mode == "activation":
            return Grid(step=1.0 / n, k_min=0, k_max=n, ties="away")
        return Grid(step=1.0 / n, k_min=-n, k_max=n, stride=2, ties="away")

    @property
    def levels(self) -> tuple[float, ...]:
        grid = self.grid
        return () if grid is None else grid.values  # above 8 bits: too many to list

    def call(self, inputs):
        return uniform_quantize(inputs, self.bits, self.mode)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "mode": self.mode}
