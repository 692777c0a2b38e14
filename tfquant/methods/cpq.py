"""Cluster-Promoting Quantization with DropBits (``cpq``): k-bit weights and activations
on learned grids, bits dropped at random while training and, with ``learn_bits``, each
layer's weight bit-width learned. See ``docs/methods.md#cpq-and-dropbits``.

May import: :mod:`tfquant.quantizers` and :mod:`tfquant.methods.base`.
"""

from __future__ import annotations

from typing import Any

from tfquant import quantizers
from tfquant.errors import ConfigError
from tfquant.methods.base import Method, Option
from tfquant.methods.standard import bits_option

__all__ = ["CPQ"]


class CPQ(Method):
    """CPQ (Lee et al. 2021): unsigned codes for the inputs (BatchNorm outputs), signed
    codes for the kernels, each grid's step set from its first training batch; DropBits and
    the learned bit-widths act on the weights only."""

    name = "cpq"
    summary = (
        "k-bit weights and activations on learned grids with DropBits (--bits, default 3; "
        "--learn-bits)"
    )
    options = (
        bits_option(3),
        Option(
            "learn_bits",
            bool,
            False,
            "learn each layer's weight bit-width (hard-concrete gates on DropBits' levels), "
            "starting at --bits; the report lists them",
        ),
        Option(
            "dropbits",
            str,
            "A",
            "DropBits scheme, A (drop the grid's outer range), B (drop its "
            "resolution) or none",
            choices=("A", "B", "none"),
        ),
    )

    def resolve(self, given: dict | None = None) -> dict:
        # dropbits=None (the quantizer's spelling of "no DropBits") is "none", not "default"
        given = dict(given or {})
        if "dropbits" in given and given["dropbits"] is None:
            given["dropbits"] = "none"
        return super().resolve(given)

    def check(self, options: dict, epochs: int) -> None:
        if options["learn_bits"] and options["dropbits"] == "none":
            raise ConfigError(
                "Expected a DropBits scheme (A or B) with learn_bits: the gates act on its "
                "levels. Received: dropbits='none'"
            )

    def quantizers(self, role: str = "hidden", **options: Any) -> tuple[Any, Any]:
        if role != "hidden":
            return super().quantizers(role)
        o = self.resolve(options)
        dropbits = None if o["dropbits"] in (None, "none") else o["dropbits"]
        return (
            quantizers.CPQQuantizer(o["bits"], signed=False, alpha=None, dropbits=None),
            quantizers.CPQQuantizer(
                o["bits"], signed=True, alpha=None, dropbits=dropbits, learn_bits=o["learn_bits"]
            ),
        )
