"""``tsq`` for ``tfquant train``: the registry's Two-Step Quantization method.

It builds layers with TSQ's sparse 2-bit input codes and per-channel ternary kernels, fits
with the three-step recipe (:func:`tfquant.methods.tsq.recipe.fit`), checkpointing through
what ``tfquant train`` gives every method, and adds step 2's records to the report. See
``docs/methods.md#tsq``.

May import: :mod:`tfquant.quantizers`, :mod:`tfquant.methods.base` and
:mod:`tfquant.methods.tsq.recipe`.
"""

from __future__ import annotations

from typing import Any

from tfquant import quantizers
from tfquant.errors import ConfigError
from tfquant.methods.base import FitContext, Method, Option

__all__ = ["TSQ", "finetune_epochs"]


def finetune_epochs(epochs: int, given: int | None) -> int:
    """Epochs of step 3: ``given``, or by default a third of ``epochs`` (at least 1 when
    there are 2 or more; step 1 gets the rest)."""
    if given is not None:
        return given
    return max(1, epochs // 3) if epochs >= 2 else 0


class TSQ(Method):
    """Two-Step Quantization (Wang et al., CVPR 2018): code learning with float kernels,
    ternary kernels by response reconstruction, fine-tuning (sections 2-4).

    The codes are :class:`~tfquant.quantizers.SparseQuantizer` 's 2-bit sparse codes with
    the threshold at the fixed point :math:`\\epsilon = d^*(\\epsilon)/2 = 0.3254` (step
    0.6508), where the int8 export is bit-exact; the kernels are
    :class:`~tfquant.quantizers.SteTernary` 's per-channel optimal ternary approximation
    (section 3.6). Its fit compiles the model itself (a fresh optimizer per step) and reads
    the training arrays (step 2 samples them).
    """

    name = "tsq"
    summary = "ternary weights on sparse 2-bit codes (Two-Step Quantization, 3 steps)"
    reads_arrays = True
    compiles_itself = True
    options = (
        Option(
            "finetune_epochs",
            int,
            None,
            "epochs of step 3 (fine-tuning with ternary kernels) out of --epochs "
            "(default: a third, at least 1)",
            min=0,
            max=9_999,
        ),
    )

    def check(self, options: dict, epochs: int) -> None:
        ft = options["finetune_epochs"]
        if ft is not None and not 0 <= ft < epochs:
            raise ConfigError(
                f"Expected finetune_epochs an integer in 0..epochs-1 = {epochs - 1} "
                f"(step 1 needs an epoch). Received: finetune_epochs={ft!r}"
            )

    def quantizers(self, role: str = "hidden", **options: Any) -> tuple[Any, Any]:
        if role != "hidden":
            return super().quantizers(role)
        return (
            quantizers.SparseQuantizer(2, *quantizers.sparse_fixed_point(2)),
            quantizers.SteTernary(method="optimal"),
        )

    def describe(self, epochs: int, options: dict) -> str:
        ft = finetune_epochs(epochs, options["finetune_epochs"])
        return (
            f"TSQ: step 1 (codes, float kernels) {epochs - ft} epoch(s), step 2 "
            f"(ternary kernels by response reconstruction), step 3 (fine-tuning) {ft} epoch(s)"
        )

    def fit(self, model: Any, run: FitContext) -> tuple:
        from tfquant.methods.tsq import recipe

        ft = finetune_epochs(run.epochs, run.options["finetune_epochs"])
        result = recipe.fit(
            model,
            run.x,
            run.y,
            code_epochs=run.epochs - ft,
            finetune_epochs=ft,
            batch_size=run.batch_size,
            learning_rate=run.learning_rate,
            validation_data=run.validation_data,
            callbacks=run.callbacks,
            verbose=run.verbose,
            seed=run.seed,
            batches=run.batches,
            checkpoints=run.checkpoints,
            strategy=run.strategy,
        )
        # step 2's seconds: this run's, or the checkpointed run's when resumed after it
        return result, (run.checkpoints.method_state or {}).get("seconds", 0.0)

    def report(self, result: tuple) -> dict:
        tsq_result, seconds = result
        return {
            "code_epochs": tsq_result.epochs[0],
            "finetune_epochs": tsq_result.epochs[1],
            "step2_seconds": seconds,
            "layers": [
                {
                    "name": r.name,
                    "rows": r.rows,
                    "error_before": r.error_before,
                    "error_after": r.error_after,
                    "batchnorm_folded": r.folded,
                }
                for r in tsq_result.records
            ],
        }

    def report_markdown(self, section: dict) -> list[str]:
        t = section
        return [
            "",
            f"## TSQ: step 1 {t['code_epochs']} epoch(s), step 2 {t['step2_seconds']:.0f} s, "
            f"step 3 {t['finetune_epochs']} epoch(s)",
            "",
            "Step 2's relative response reconstruction error per layer, from the optimal "
            "ternary approximation of the float kernel (before) to the solved kernel (after):",
            "",
            "| layer | rows | error before | error after |",
            "|---|---|---|---|",
            *(
                f"| {x['name']} | {x['rows']} | {x['error_before']:.4f} | {x['error_after']:.4f} |"
                for x in t["layers"]
            ),
        ]
