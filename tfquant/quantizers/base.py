"""The quantizer contract: :class:`Grid` (the values a quantizer outputs, as data) and
:class:`Quantizer` (the base class every tfquant quantizer derives from).

A quantizer declares its grid: the values :math:`u k` it may output for integer codes
``k_min <= k <= k_max`` (every ``stride``-th), how an input exactly between two values
rounds, and whether the step :math:`u` is a per-tensor / per-channel scale computed from
the data (``scaled``) or a variable learned in training (``learned``). The converter plans
its int8 and binary kernels from this data alone, never from the quantizer's class (the way
brevitas' export reads a ``QuantTensor``'s scale, zero point and bit width, and Keras 3's
own quantizers keep the scale beside the codes): a new quantizer converts exactly when it
declares a grid.

May import: ``tfquant._keras`` and ``tfquant.errors`` only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tfquant._keras import keras
from tfquant.errors import ConfigError

__all__ = ["Grid", "Quantizer", "TIES"]

#: How an input exactly halfway between two levels rounds: to the upper level, the lower
#: one, the even code, or away from zero.
TIES = ("up", "down", "even", "away")


@dataclasses.dataclass(frozen=True)
class Grid:
    r"""The values a quantizer outputs: :math:`u k` for the codes
    ``k = k_min, k_min + stride, ..., k_max``.

    Attributes:
        step: :math:`u > 0`, the value of code 1. For a ``scaled`` grid the step is
            relative: the outputs are :math:`s\,u k` with a scale :math:`s` computed from the
            tensor (per output channel or per tensor), e.g. XNOR-Net's mean :math:`|w|`.
        k_min, k_max: the smallest and largest code.
        stride: the distance between consecutive codes: 2 for grids without a zero code
            (sign: codes -1 and +1 of step 1; 2-bit DoReFa weights: -3, -1, 1, 3 of step
            1/3), 1 otherwise.
        ties: how an input halfway between two values rounds (:data:`TIES`); sign
            (``sign(0) = +1``) rounds ``"up"``.
        scaled: the outputs are the values times a data-dependent scale (see ``step``).
        learned: ``step`` is a trained variable's current value (CPQ's :math:`\alpha`):
            known once trained, not a constant of the configuration.
        threshold: where the rounding boundary next to the zero code lies, when it is not
            halfway (``|x| <= threshold`` gives 0: TSQ's sparse quantizer, fixed-threshold
            ternary); ``None`` for halfway.

    Raises:
        ConfigError: for a step that is not a finite number > 0, a code range with
            ``k_min > k_max`` or not a whole number of strides, or unknown ``ties``.

    Example:

    >>> Grid(step=1.0, k_min=-1, k_max=1, stride=2).values
    (-1.0, 1.0)
    >>> Grid(step=0.25, k_min=-2, k_max=1, learned=True).codes
    (-2, -1, 0, 1)
    """

    step: float
    k_min: int
    k_max: int
    stride: int = 1
    ties: str = "even"
    scaled: bool = False
    learned: bool = False
    threshold: float | None = None

    def __post_init__(self) -> None:
        step = self.step
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            raise ConfigError(f"Expected Grid step a finite number > 0. Received: step={step!r}")
        if not (math.isfinite(step) and step > 0):
            raise ConfigError(f"Expected Grid step a finite number > 0. Received: step={step!r}")
        for name in ("k_min", "k_max", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"Expected Grid {name} an integer. Received: {name}={value!r}")
        if self.stride < 1 or self.k_min > self.k_max or (self.k_max - self.k_min) % self.stride:
            raise ConfigError(
                "Expected Grid codes k_min <= k_max a whole number of strides (>= 1) apart. "
                f"Received: k_min={self.k_min}, k_max={self.k_max}, stride={self.stride}"
            )
        if self.ties not in TIES:
            raise ConfigError(f"Expected Grid ties in {TIES}. Received: ties={self.ties!r}")
        object.__setattr__(self, "step", float(step))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def codes(self) -> tuple[int, ...]:
        """The integer codes, ascending."""
        return tuple(range(self.k_min, self.k_max + 1, self.stride))

    @property
    def values(self) -> tuple[float, ...]:
        """The output values ``step * k`` (relative to the scale for a ``scaled`` grid)."""
        return tuple(float(self.step * k) for k in self.codes)

    @property
    def signed(self) -> bool:
        """Whether negative values occur."""
        return self.k_min < 0

    @property
    def zero_code(self) -> bool:
        """Whether 0 is a value (sign quantizers have none)."""
        return 0 in self.codes

    @property
    def size(self) -> int:
        """The number of values."""
        return (self.k_max - self.k_min) // self.stride + 1


class Quantizer(keras.layers.Layer):
    """Base class of tfquant quantizers.

    Subclasses implement ``call(inputs)`` with one of the pure functions, set ``precision``
    and declare :attr:`grid`; ``levels`` and ``scaled`` follow from the grid.
    """

    precision: int = 32

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)

    @property
    def grid(self) -> Grid | None:
        """The values this quantizer outputs (at deployment: :meth:`exact`), or ``None`` for
        a quantizer whose outputs lie on no grid the converter can export."""
        return None

    @property
    def levels(self) -> tuple[float, ...] | None:
        """The output values, ``grid.values`` (relative to the scale for a scaled grid)."""
        grid = self.grid
        return None if grid is None else grid.values

    @property
    def scaled(self) -> bool:
        """Whether ``levels`` are multiplied by a scale that is not a constant: computed
        from the data, or learned."""
        grid = self.grid
        return grid is not None and (grid.scaled or grid.learned)

    def exact(self, inputs):
        """The quantization applied at deployment (``tfquant.finalize``): ``self(inputs)``,
        except for wrappers that relax a quantizer during training, which apply the wrapped
        one. (A method, not a property returning a quantizer: Keras 3's loader walks every
        attribute that is a layer, and one returning ``self`` would never end.)"""
        return self(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


def check_clip(clip_value: float | None) -> float | None:
    """``clip_value`` as a float > 0, or ``None``."""
    if clip_value is not None and not clip_value > 0:
        raise ConfigError(f"Expected clip_value > 0 or None. Received: clip_value={clip_value}")
    return None if clip_value is None else float(clip_value)
