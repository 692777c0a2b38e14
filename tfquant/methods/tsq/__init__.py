"""Two-Step Quantization (Wang et al., "Two-Step Quantization for Low-bit Neural
Networks", CVPR 2018): ternary weights on sparse 2-bit activation codes.

* :mod:`~tfquant.methods.tsq.solver`: step 2's NumPy solver for one layer (response
  reconstruction);
* :mod:`~tfquant.methods.tsq.step2`: step 2 on a Keras model (sampling rows, folding
  BatchNorm through :mod:`tfquant.graph`, writing the ternary kernels);
* :mod:`~tfquant.methods.tsq.recipe`: the three steps and their checkpoints (:func:`fit`);
* :mod:`~tfquant.methods.tsq.method`: the registry's ``tsq`` method for ``tfquant train``.

What the paper states and what tfquant reconstructs: ``docs/methods.md#tsq``.
"""

from tfquant.methods.tsq.method import TSQ
from tfquant.methods.tsq.recipe import TSQResult, code_learning, fine_tuning, fit
from tfquant.methods.tsq.solver import (
    LayerSolution,
    alpha_step,
    coordinate_update,
    lambda_schedule,
    optimal_ternary,
    response_objective,
    solve_layer,
    sparse_bins,
    z_step,
)
from tfquant.methods.tsq.step2 import (
    LayerRecord,
    im2col_rows,
    learn_transformations,
    ternary_layers,
)

__all__ = [
    "LayerSolution",
    "optimal_ternary",
    "sparse_bins",
    "z_step",
    "alpha_step",
    "coordinate_update",
    "response_objective",
    "lambda_schedule",
    "solve_layer",
    "LayerRecord",
    "im2col_rows",
    "learn_transformations",
    "ternary_layers",
    "code_learning",
    "fine_tuning",
    "TSQResult",
    "fit",
    "TSQ",
]
