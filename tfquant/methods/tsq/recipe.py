"""TSQ's recipe: step 1 (code learning), step 2 (transformations), step 3 (fine-tuning).

:func:`fit` runs the three steps on a model built with ternary layers on sparse codes
(``tfquant.zoo.build(..., method="tsq")``); Wang et al., CVPR 2018, sections 2-4. Given a
:class:`tfquant.methods.base.Checkpoints` (what ``tfquant train`` gives every method), it
checkpoints each epoch and the boundary after step 2 (the solved kernels, step 2's records
as this method's state) and resumes from any of them, bit-identical to an uninterrupted run.

May import: numpy, TensorFlow/Keras, :mod:`tfquant.models`, :mod:`tfquant.methods.base` and
the other modules of :mod:`tfquant.methods.tsq`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from tfquant._keras import keras
from tfquant.methods.base import Checkpoints
from tfquant.methods.tsq.solver import _check_positive_int
from tfquant.methods.tsq.step2 import LayerRecord, learn_transformations, ternary_layers

__all__ = ["code_learning", "fine_tuning", "TSQResult", "fit", "STATE_KEYS"]

# the method state a checkpoint carries: step 2's records (None before it) and its seconds
STATE_KEYS = ("records", "seconds")


def _set_gates(layers, value: float) -> list:
    for m in layers:
        if m.kernel_gate is not None:
            m.kernel_gate.assign(value)
    return layers


def code_learning(model: keras.Model) -> list:
    """Step 1 set-up, in place: every ternary layer forwards its float kernel (kernel gate
    0) while its input quantizer (TSQ's :class:`~tfquant.quantizers.SparseQuantizer`) stays,
    so training learns the sparse codes with float weights (section 2.6). Returns the layers.

    Raises:
        ValueError: no ternary layer, or one without an input quantizer (TSQ learns codes).
    """
    layers = ternary_layers(model)
    bare = [m.name for m in layers if m.input_quantizer is None]
    if bare:
        raise ValueError(
            "Expected every ternary layer to quantize its input (TSQ learns activation codes "
            f"in step 1). Received: layers {bare} with input_quantizer=None"
        )
    return _set_gates(layers, 0.0)


def fine_tuning(model: keras.Model) -> list:
    """Step 3 set-up, in place: every ternary layer forwards its kernel quantizer again
    (kernel gate 1): the optimal ternary approximation of the latent kernel, recomputed at
    each step, with a straight-through gradient, as the authors' ``TernaryConvolution``
    layer does (section 4; reading it as TSQ's third stage is a reconstruction, see
    ``docs/methods.md#tsq``). After step 2 the latent kernel is
    ``alpha * ternary`` per channel, which that approximation returns unchanged, so fine-
    tuning starts from step 2's solution. Returns the layers."""
    return _set_gates(ternary_layers(model), 1.0)


@dataclass
class TSQResult:
    """What :func:`fit` did.

    Attributes:
        history: per-epoch logs of step 1's epochs followed by step 3's (``keras``
            ``History.history`` of the two ``fit`` calls, concatenated).
        records: step 2's :class:`LayerRecord` per layer (empty with ``step2=False``).
        epochs: ``(code_epochs, finetune_epochs)``.
        step2_seconds: wall time of step 2 (0 when resumed after it).
    """

    history: dict
    records: list
    epochs: tuple
    step2_seconds: float


def fit(
    model: keras.Model,
    x,
    y,
    *,
    code_epochs: int,
    finetune_epochs: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    finetune_learning_rate: float | None = None,
    optimizer=None,
    loss="sparse_categorical_crossentropy",
    metrics=("accuracy",),
    step2: bool = True,
    step2_inputs: int = 2048,
    validation_data=None,
    callbacks=(),
    verbose="auto",
    seed: int = 0,
    batches=None,
    checkpoints: Checkpoints | None = None,
    strategy=None,
    **step2_options,
) -> TSQResult:
    """Two-Step Quantization's recipe on a Keras model built with ternary layers on sparse
    codes (``tfquant.zoo.build(..., method="tsq")``), in place.

    1. Code learning (:func:`code_learning`): ``code_epochs`` epochs with float kernels and
       sparse quantized activations, ``learning_rate``.
    2. Transformation learning (:func:`learn_transformations`) on the first
       ``step2_inputs`` examples of ``x``, after BatchNorm's moving statistics are
       recomputed on them (step 2 folds BatchNorm with those statistics, which lag behind
       the weights after short training); ``step2_options`` go to it (``samples``,
       ``iterations``, ``lam_start``, ``lam_end``, ...). ``step2=False`` skips it, which is
       the ablation "fine-tuning from the optimal ternary approximation only".
    3. Fine-tuning (:func:`fine_tuning`): ``finetune_epochs`` epochs with ternary kernels at
       ``finetune_learning_rate`` (default ``learning_rate / 10``, ``docs/methods.md#tsq``) with
       a fresh optimizer.

    Args:
        model: the model (modified in place; compiled by this function).
        x, y: training data (arrays).
        code_epochs: epochs of step 1 (>= 1).
        finetune_epochs: epochs of step 3 (>= 0).
        optimizer: ``None`` for Adam, or a callable ``learning_rate -> optimizer`` (called
            once per stage).
        loss, metrics: as ``model.compile``'s.
        validation_data, callbacks, verbose, batch_size: as ``model.fit``'s (the callbacks
            serve both stages; epochs are numbered on from step 1 to step 3).
        seed: seed of step 2's row sampling.
        batches: ``None`` to fit on ``(x, y)`` with Keras' shuffling, or a callable
            ``(epochs, initial_epoch) -> (dataset, steps_per_epoch)`` giving the training
            batches of epochs ``initial_epoch..epochs-1`` (e.g.
            :func:`tfquant.distribute.epoch_batches`): with batches that depend only on the
            epoch, a resumed run trains on what an uninterrupted one would.
        checkpoints: ``None``, or where the run checkpoints and resumes
            (:class:`tfquant.methods.base.Checkpoints`): its ``initial_epoch`` (epochs
            already trained, ``0..code_epochs + finetune_epochs``) resumes step 1 at that
            epoch, or step 3 when its ``method_state`` holds step 2's records; its
            ``restore`` loads the variables once the resumed stage's optimizer is built; after
            step 2, with step 3's fresh optimizer built, the records become its
            ``method_state`` and the boundary is saved (``save(model, code_epochs,
            "-step2")``). Its per-epoch callback goes in ``callbacks``.
        strategy: ``None``, or the ``tf.distribute`` strategy whose scope ``model`` was
            built in: each stage's optimizer is made, restored and checkpointed, and step 2
            runs, in its scope; ``fit`` runs outside it (the model keeps its strategy), so
            callbacks can evaluate other, undistributed models.

    Returns:
        A :class:`TSQResult` (``history`` holds this call's epochs only).

    Raises:
        ValueError: epochs out of range, no ternary layer, a ternary layer without an input
            quantizer, bad step-2 options, or a resume point out of range.
    """
    code_epochs = _check_positive_int("code_epochs", code_epochs)
    if (
        isinstance(finetune_epochs, bool)
        or not isinstance(finetune_epochs, int)
        or finetune_epochs < 0
    ):
        raise ValueError(
            f"Expected finetune_epochs an integer >= 0. Received: finetune_epochs={finetune_epochs!r}"
        )
    step2_inputs = _check_positive_int("step2_inputs", step2_inputs)
    total = code_epochs + finetune_epochs
    initial_epoch = checkpoints.initial_epoch if checkpoints is not None else 0
    saved = (checkpoints.method_state if checkpoints is not None else None) or {}
    step2_records = (
        None
        if saved.get("records") is None
        else [LayerRecord.from_json(r) for r in saved["records"]]
    )
    if (
        isinstance(initial_epoch, bool)
        or not isinstance(initial_epoch, int)
        or not 0 <= initial_epoch <= total
        or (initial_epoch > code_epochs and step2_records is None)
        or (initial_epoch < code_epochs and step2_records is not None)
    ):
        raise ValueError(
            f"Expected initial_epoch an integer in 0..{code_epochs} before step 2 (no "
            f"step2_records) or in {code_epochs}..{total} after it. Received: "
            f"initial_epoch={initial_epoch!r}, step2_records "
            f"{'given' if step2_records is not None else 'None'}"
        )
    if checkpoints is not None and checkpoints.method_state is None:
        # every checkpoint of the run carries the state: records None until step 2 ran
        checkpoints.method_state = {"records": None, "seconds": 0.0}
    make = optimizer or (lambda lr: keras.optimizers.Adam(lr))
    ft_lr = learning_rate / 10.0 if finetune_learning_rate is None else finetune_learning_rate
    history: dict = {}
    pending = checkpoints.restore if checkpoints is not None and initial_epoch > 0 else None

    def scope():
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    def compile_stage(lr):
        nonlocal pending
        with scope():
            model.compile(optimizer=make(lr), loss=loss, metrics=list(metrics))
            model.optimizer.build(model.trainable_variables)
            if pending is not None:
                pending(model)
                pending = None

    def train(first, last):
        if first >= last:
            return
        data: tuple[Any, ...]
        if batches is None:
            data, more = (x, y), {"batch_size": batch_size}
        else:
            dataset, steps = batches(last, first)
            data, more = (dataset,), {"steps_per_epoch": steps, "shuffle": False}
        h = model.fit(
            *data,
            epochs=last,
            initial_epoch=first,
            validation_data=validation_data,
            callbacks=list(callbacks),
            verbose=verbose,
            **more,
        )
        for k, v in h.history.items():
            history.setdefault(k, []).extend(float(e) for e in v)

    step2_seconds = 0.0
    if step2_records is None:
        code_learning(model)
        compile_stage(learning_rate)
        train(initial_epoch, code_epochs)
        records: list = []
        start = time.perf_counter()
        if step2:
            # step 2 folds BatchNorm with its moving statistics, which lag behind the weights
            # after short training (momentum 0.99): recompute them exactly on step 2's inputs
            from tfquant.models import reestimate_batchnorm

            with scope():
                reestimate_batchnorm(model, x[:step2_inputs], batch_size=batch_size)
                records = learn_transformations(
                    model,
                    x[:step2_inputs],
                    batch_size=min(batch_size, 256),
                    seed=seed,
                    progress=verbose not in (0, False),
                    **step2_options,
                )
        step2_seconds = time.perf_counter() - start
        fine_tuning(model)
        compile_stage(ft_lr)
        if checkpoints is not None:  # the boundary between steps 2 and 3
            checkpoints.method_state = {
                "records": [r.to_json() for r in records],
                "seconds": step2_seconds,
            }
            with scope():
                checkpoints.save(model, code_epochs, "-step2")
    else:
        records = list(step2_records)
        fine_tuning(model)
        compile_stage(ft_lr)
    train(max(initial_epoch, code_epochs), total)
    return TSQResult(history, records, (code_epochs, finetune_epochs), step2_seconds)
