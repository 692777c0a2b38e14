"""The methods that are one ``model.fit`` with Adam over quantized layers: ``ste``
(binary, straight-through estimator), ``dorefa`` (k-bit, DoReFa-Net) and ``float`` (the
reference every method is compared with). See ``docs/methods.md#ste-dorefa-and-float``.

May import: :mod:`tfquant.quantizers` and :mod:`tfquant.methods.base`.
"""

from __future__ import annotations

from typing import Any

from tfquant import quantizers
from tfquant.methods.base import Method, Option

__all__ = ["STE", "DoReFa", "Float", "BITS"]


def bits_option(default: int) -> Option:
    """The ``bits`` option: bits of the hidden layers' weights and activations."""
    return Option(
        "bits",
        int,
        default,
        "bits of the hidden layers' weights and activations",
        min=1,
        max=8,
    )


BITS = bits_option(2)


class STE(Method):
    """Binary weights and activations (sign), trained with the straight-through estimator
    and Adam (Courbariaux et al. 2016; Bengio et al. 2013)."""

    name = "ste"
    summary = "binary weights and activations, straight-through estimator, Adam"

    def quantizers(self, role: str = "hidden", **options: Any) -> tuple[Any, Any]:
        if role != "hidden":
            return super().quantizers(role)
        return "ste_sign", "ste_sign"


class DoReFa(Method):
    """DoReFa-Net's k-bit activations and weights with the straight-through estimator
    (Zhou et al. 2016, sections 2.3-2.4): CPQ's baseline."""

    name = "dorefa"
    summary = "k-bit weights and activations (DoReFa-Net, --bits, default 2)"
    options = (BITS,)

    def quantizers(self, role: str = "hidden", **options: Any) -> tuple[Any, Any]:
        if role != "hidden":
            return super().quantizers(role)
        bits = self.resolve(options)["bits"]
        return (
            quantizers.UniformQuantizer(bits, mode="activation"),
            quantizers.UniformQuantizer(bits, mode="weight"),
        )


class Float(Method):
    """No quantizer: the float network (a ReLU takes the input quantizer's place)."""

    name = "float"
    summary = "float weights and activations: the reference"

    def quantizers(self, role: str = "hidden", **options: Any) -> tuple[Any, Any]:
        return None, None
