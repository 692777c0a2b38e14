"""Training under TensorFlow's own distribution (``tf.distribute``), and data order that a
resumed run reproduces.

``tfquant train --strategy mirrored`` trains under :func:`strategy`: a
``MirroredStrategy`` over every local GPU (or the CPU), or, when ``TF_CONFIG`` names
several workers, a ``MultiWorkerMirroredStrategy``, each worker one process with the same
command line. The chief (task ``chief``, else ``worker`` 0) writes the artifacts; the other
workers train in lockstep and write nothing into ``--out``.

Keras 3 (3.14, 3.15) does not run ``fit`` under ``MultiWorkerMirroredStrategy`` as it
ships (keras-team/keras#20585): its symbolic build reduces the first data batch with
``strategy.reduce(..., axis=None)``, which the collective strategy refuses for a nested
batch, and it reduces each step's scalar logs with ``axis=0``. :func:`prepare` fixes both
on one model instance (the batch is used for its shapes only; the logs are given a leading
axis of one, so ``axis=0`` averages them over workers), and changes nothing else.

:func:`epoch_batches` makes the training batches of epoch ``e`` a function of
``(seed, e)`` alone: a run resumed at epoch ``k`` reads the batches an uninterrupted run
reads from epoch ``k`` on, in the same order.
"""

from __future__ import annotations

import json
import math
import os
import types
from typing import Any

import numpy as np

from tfquant._keras import keras, tf

__all__ = [
    "STRATEGIES",
    "Cluster",
    "cluster",
    "strategy",
    "prepare",
    "copy_state",
    "epoch_batches",
]

STRATEGIES = ("none", "mirrored")


class Cluster:
    """This process's place in ``TF_CONFIG``'s cluster (one worker when it is unset)."""

    def __init__(self, workers: int, task_type: str, task_index: int, is_chief: bool):
        self.workers, self.task_type, self.task_index = workers, task_type, task_index
        self.is_chief = is_chief

    def __repr__(self) -> str:
        return (
            f"Cluster(workers={self.workers}, task={self.task_type}:{self.task_index}, "
            f"chief={self.is_chief})"
        )


def cluster(environ: dict | None = None) -> Cluster:
    """Parse ``TF_CONFIG`` (``{"cluster": {"worker": [...], "chief": [...]}, "task":
    {"type": ..., "index": ...}}``); one worker, the chief, when it is unset.

    Raises:
        ValueError: ``TF_CONFIG`` is not such a JSON object.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return Cluster(1, "worker", 0, True)
    try:
        config = json.loads(text)
        spec = config["cluster"]
        task_type, task_index = str(config["task"]["type"]), int(config["task"]["index"])
        workers = sum(len(spec.get(kind, ())) for kind in ("chief", "worker"))
        if task_type not in ("chief", "worker") or workers < 1:
            raise ValueError(f"task type {task_type!r} with {workers} chief/worker addresses")
        if not 0 <= task_index < len(spec.get(task_type, ())):
            raise ValueError(f"task index {task_index} outside the {task_type} list")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            'Expected TF_CONFIG a JSON object {"cluster": {"worker": ["host:port", ...]}, '
            '"task": {"type": "worker", "index": i}} (a "chief" list is optional). '
            f"Received: {text[:200]!r} ({e})"
        ) from None
    has_chief = bool(spec.get("chief"))
    is_chief = task_type == "chief" or (not has_chief and task_type == "worker" and task_index == 0)
    return Cluster(workers, task_type, task_index, is_chief)


def strategy(name: str) -> Any:
    """The ``tf.distribute`` strategy named ``name``: ``None`` for ``"none"`` (the default
    strategy); for ``"mirrored"`` a ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names
    several workers, else a ``MirroredStrategy`` over the local GPUs (the CPU without one).
    Create it before any other TensorFlow work: the multi-worker strategy configures the
    runtime and waits for every worker.

    Raises:
        ValueError: an unknown ``name``, or a malformed ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Expected strategy in {STRATEGIES}. Received: {name!r}")
    if name == "none":
        return None
    if cluster().workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def _is_multi_worker(strategy_: Any) -> bool:
    return isinstance(strategy_, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy_.extended._in_multi_worker_mode()
    )


def prepare(model: keras.Model, strategy_: Any) -> keras.Model:
    """Let ``model.fit`` / ``evaluate`` run under ``strategy_`` (see the module docstring);
    a no-op unless it is a multi-worker ``MultiWorkerMirroredStrategy``. Returns ``model``."""
    if not _is_multi_worker(strategy_):
        return model

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy_.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(local, next(it))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def with_axis(step):
        def wrapped(data):
            return {k: tf.reshape(v, [1]) for k, v in step(data).items()}

        return wrapped

    # Instance attributes: the model's class and every other model are left as they are.
    object.__setattr__(
        model, "_maybe_symbolic_build", types.MethodType(maybe_symbolic_build, model)
    )
    object.__setattr__(model, "train_step", with_axis(model.train_step))
    object.__setattr__(model, "test_step", with_axis(model.test_step))
    return model


def copy_state(source: keras.Model, target: keras.Model) -> None:
    """Copy the weights and, when both are compiled and built, the optimizer's variables."""
    target.set_weights(source.get_weights())
    optimizer = getattr(source, "optimizer", None)
    if (
        getattr(optimizer, "built", False)
        and type(getattr(target, "optimizer", None)) is type(optimizer)
        and optimizer is not None
    ):
        if not target.optimizer.built:
            target.optimizer.build(target.trainable_variables)
        for a, b in zip(target.optimizer.variables, optimizer.variables):
            a.assign(b.numpy())


def epoch_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    epochs: int,
    initial_epoch: int = 0,
) -> tuple[tf.data.Dataset, int]:
    """``(dataset, steps_per_epoch)``: the training batches of epochs ``initial_epoch`` to
    ``epochs - 1`` in sequence, epoch ``e`` in the order of
    ``np.random.default_rng([seed, e]).permutation(len(x))``, the last batch of an epoch
    partial. Give ``model.fit`` the dataset with ``steps_per_epoch`` and ``initial_epoch``.
    Batches are gathered from the arrays in Python (no copy of them enters a TensorFlow
    graph) and prefetched; under a multi-worker strategy each worker reads its share of each
    global batch."""
    n = len(x)
    if n == 0 or len(y) != n:
        raise ValueError(f"Expected x and y of the same non-zero length. Received: {n}, {len(y)}")
    steps = math.ceil(n / batch_size)

    def generate():
        for epoch in range(initial_epoch, epochs):
            order = np.random.default_rng([seed, epoch]).permutation(n)
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                yield x[index], y[index]

    signature = (
        tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
        tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype)),
    )
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    options = tf.data.Options()
    # Shard by element (each worker keeps its part of every global batch): a generator has
    # no files to shard by.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE), steps
