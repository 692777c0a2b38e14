"""Mirror descent for binary networks (Ajanthan et al., AISTATS 2021): ``md-tanh-s`` and
``md-softmax-s``. Sign quantizers on weights and inputs; the optimizer
(:class:`tfquant.optimizers.MirrorDescent`) keeps the dual variables as slots and its
:math:`\\beta` is annealed over the run (:class:`tfquant.callbacks.BetaAnnealing`). See
``docs/methods.md#mirror-descent-md-tanh-s-md-softmax-s``.

May import: :mod:`tfquant.optimizers`, :mod:`tfquant.callbacks` and
:mod:`tfquant.methods.base`.
"""

from __future__ import annotations

from typing import Any

from tfquant.methods.base import Method

__all__ = ["MirrorDescentMethod"]


class MirrorDescentMethod(Method):
    """Mirror descent with the ``tanh`` or ``softmax`` mirror map, the "-S" (stable,
    straight-through) form: sign quantizers, the duals in the optimizer (section 4)."""

    learning_rate = 1e-2

    def __init__(self, mirror_map: str):
        self.mirror_map = mirror_map
        super().__init__(
            f"md-{mirror_map}-s",
            summary=f"binary, mirror descent with the {mirror_map} mirror map (default lr 1e-2)",
        )

    def quantizers(self, role: str = "hidden", **options: Any) -> tuple[Any, Any]:
        if role != "hidden":
            return super().quantizers(role)
        return "ste_sign", "ste_sign"

    def optimizer(self, learning_rate: float, options: dict) -> Any:
        from tfquant.optimizers import MirrorDescent

        return MirrorDescent(learning_rate=learning_rate, mirror_map=self.mirror_map)

    def callbacks(self, model: Any, epochs: int, options: dict) -> list:
        from tfquant.callbacks import BetaAnnealing

        return [BetaAnnealing()]
