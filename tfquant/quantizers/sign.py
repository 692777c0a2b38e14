"""Binary and ternary quantizers: sign with a straight-through gradient (plain, Bi-Real's
approximation, XNOR-Net's scaled) and ternary (TWN, optimal, fixed threshold).

May import: ``tfquant.quantizers.base``, ``tfquant.quantizers._ste`` and ``tfquant._keras``.
"""

from __future__ import annotations

from typing import Any

from tfquant._keras import keras
from tfquant.errors import ConfigError
from tfquant.quantizers._ste import approx_sign, scaled_sign, ste_sign, ste_ternary
from tfquant.quantizers.base import Grid, Quantizer, check_clip

__all__ = ["SteSign", "ApproxSign", "ScaledSign", "SteTernary"]

#: codes -1 and +1 (no zero code); sign(0) = +1, i.e. the tie at 0 rounds up.
SIGN_GRID = Grid(step=1.0, k_min=-1, k_max=1, stride=2, ties="up")


@keras.utils.register_keras_serializable(package="tfquant")
class SteSign(Quantizer):
    r"""Binary quantizer: sign with a straight-through gradient clipped at ``clip_value``.

    Forward :math:`q(x) = -1` for :math:`x < 0`, :math:`+1` otherwise, in the form LCE turns
    into ``LceQuantize`` (inputs) and a binary filter (kernels). Backward
    :math:`\partial q / \partial x = 1_{|x| \le c}`.

    Args:
        clip_value: the gradient is zero where ``|x| > clip_value``; ``None`` passes it
            everywhere.

    References: Courbariaux et al., "Binarized Neural Networks", NeurIPS 2016.
    """

    precision = 1

    def __init__(self, clip_value: float | None = 1.0, **kwargs: Any) -> None:
        self.clip_value = check_clip(clip_value)
        super().__init__(**kwargs)

    @property
    def grid(self) -> Grid:
        return SIGN_GRID

    def call(self, inputs):
        return ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@keras.utils.register_keras_serializable(package="tfquant")
class ApproxSign(Quantizer):
    r"""Binary quantizer with Bi-Real Net's gradient :math:`(2 - 2|x|) 1_{|x| \le 1}`."""

    precision = 1

    @property
    def grid(self) -> Grid:
        return SIGN_GRID

    def call(self, inputs):
        return approx_sign(inputs)


@keras.utils.register_keras_serializable(package="tfquant")
class ScaledSign(Quantizer):
    r"""XNOR-Net binary weights :math:`\alpha_o \operatorname{sign}(w)`, :math:`\alpha_o` =
    mean :math:`|w|` of output channel ``o`` (the last axis); a straight-through gradient.

    Args:
        clip_value: gradient mask threshold, ``None`` (default) for none.
        per_channel: one scale per output channel (default) or one per tensor.
    """

    precision = 1

    def __init__(self, clip_value: float | None = None, per_channel: bool = True, **kwargs: Any):
        self.clip_value = check_clip(clip_value)
        self.per_channel = bool(per_channel)
        super().__init__(**kwargs)

    @property
    def grid(self) -> Grid:
        return Grid(step=1.0, k_min=-1, k_max=1, stride=2, ties="up", scaled=True)

    def call(self, inputs):
        return scaled_sign(inputs, clip_value=self.clip_value, per_channel=self.per_channel)

    def get_config(self):
        return {
            **super().get_config(),
            "clip_value": self.clip_value,
            "per_channel": self.per_channel,
        }


_TERNARY_METHODS = ("twn", "optimal", "fixed")


@keras.utils.register_keras_serializable(package="tfquant")
class SteTernary(Quantizer):
    r"""Ternary quantizer :math:`\alpha\,\operatorname{sign}(w)\,1_{|w| > \Delta}` with a
    straight-through gradient. See :func:`tfquant.quantizers.ste_ternary`.

    Args:
        method: ``"twn"`` (threshold 0.7 mean|w|, default), ``"optimal"`` (exact least-squares
            ternary approximation) or ``"fixed"`` (threshold ``threshold_value``, no scale).
        per_channel: statistics per output channel (last axis) or per tensor.
        threshold_value: the threshold of ``method="fixed"``.
        clip_value: gradient mask threshold, ``None`` for none.
    """

    precision = 2

    def __init__(
        self,
        method: str = "twn",
        per_channel: bool = True,
        threshold_value: float = 0.5,
        clip_value: float | None = 1.0,
        **kwargs: Any,
    ) -> None:
        if method not in _TERNARY_METHODS:
            raise ConfigError(f"Expected method in {_TERNARY_METHODS}. Received: method={method!r}")
        if not threshold_value > 0:
            raise ConfigError(
                f"Expected threshold_value > 0. Received: threshold_value={threshold_value}"
            )
        self.method = method
        self.per_channel = bool(per_channel)
        self.threshold_value = float(threshold_value)
        self.clip_value = check_clip(clip_value)
        super().__init__(**kwargs)

    @property
    def grid(self) -> Grid:
        # codes -1, 0, +1; the boundary is a threshold, not halfway (|w| > threshold -> 1);
        # "twn" and "optimal" scale them by a per-channel (or per-tensor) alpha
        fixed = self.method == "fixed"
        return Grid(
            step=1.0,
            k_min=-1,
            k_max=1,
            ties="down",
            scaled=not fixed,
            threshold=self.threshold_value if fixed else None,
        )

    def call(self, inputs):
        return ste_ternary(
            inputs, self.method, self.per_channel, self.threshold_value, self.clip_value
        )

    def get_config(self):
        return {
            **super().get_config(),
            "method": self.method,
            "per_channel": self.per_channel,
            "threshold_value": self.threshold_value,
            "clip_value": self.clip_value,
        }
