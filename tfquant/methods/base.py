"""What a training method is: the :class:`Method` base class, its :class:`Option` s, and
the :class:`Checkpoints` and :class:`FitContext` that ``tfquant train`` hands it.

A method says which quantizers a layer gets (:meth:`Method.quantizers`), its declared
options, its optimizer and default learning rate, its callbacks, how it fits (by default
one ``model.fit``), how it finalizes and what it adds to the report. ``tfquant train``
(:mod:`tfquant.train`) and the zoo read all of it from the method object, never from its
name, so a method registered by user code (:func:`tfquant.methods.register`) trains,
finalizes and converts like the built-in ones.

May import: :mod:`tfquant.errors`, :mod:`tfquant.quantizers`, :mod:`tfquant.models`,
:mod:`tfquant._keras` (never :mod:`tfquant.train`, the zoo or the CLI, which read it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tfquant.errors import ConfigError

__all__ = ["Option", "Checkpoints", "FitContext", "Method"]

ROLES = ("hidden", "first", "last")


@dataclasses.dataclass(frozen=True)
class Option:
    """One declared setting (of a method, or of ``tfquant train``'s configuration): its
    name, type, default, help, and its allowed values (``choices``, or ``min``/``max`` for
    numbers, both inclusive). The command line's flag and the configuration's check are
    both built from it, so each range is written once.

    Example:

    >>> Option("bits", int, 3, "bits of weights and activations", min=1, max=8).check(4)
    4
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    open_interval: bool = False  # min and max themselves excluded (e.g. (0, 1))

    @property
    def flag(self) -> str:
        """The command-line flag: ``--learn-bits`` for ``learn_bits``."""
        return "--" + self.name.replace("_", "-")

    def describe_range(self) -> str:
        """The allowed values in words (``"an integer in 1..8"``, ``"in ('A', 'B')"``)."""
        if self.choices is not None:
            return f"in {self.choices}"
        kind = {int: "an integer", float: "a finite number", bool: "a bool"}.get(
            self.type, self.type.__name__
        )
        low, high = self.min, self.max
        if self.open_interval:
            if low is None:
                return kind if high is None else f"{kind} < {_num(high)}"
            if high is None:
                return f"{kind} > {_num(low)}"
            return f"{kind} in ({_num(low)}, {_num(high)})"
        if low is not None and high is not None:
            return f"{kind} in {_num(low)}..{_num(high)}"
        if low is not None:
            return f"{kind} >= {_num(low)}"
        return kind

    def allows(self, value: Any) -> bool:
        """Whether ``value`` is of the type and in the range (``None`` is not)."""
        if self.choices is not None:
            return value in self.choices
        if self.type is bool:
            return isinstance(value, bool)
        if self.type is str:
            return isinstance(value, str)
        if isinstance(value, bool):
            return False
        if self.type is int and not isinstance(value, int):
            return False
        if self.type is float and not (isinstance(value, (int, float)) and math.isfinite(value)):
            return False
        if self.open_interval:
            return (self.min is None or value > self.min) and (
                self.max is None or value < self.max
            )
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def check(self, value: Any) -> Any:
        """``value`` when it is allowed (``None`` always is: "not given").

        Raises:
            ConfigError: saying what was expected and what was received.
        """
        if value is None or self.allows(value):
            return value
        raise ConfigError(
            f"Expected {self.name} {self.describe_range()}. Received: {self.name}={value!r}"
        )


def _num(x: float) -> str:
    if x == 2**32 - 1:
        return "2**32-1"
    return str(int(x)) if float(x).is_integer() else str(x)


class Checkpoints(Protocol):
    """What a method's :meth:`Method.fit` checkpoints and resumes through (``tfquant
    train`` gives one; it is also the per-epoch callback in ``FitContext.callbacks``).

    Attributes:
        initial_epoch: epochs the checkpoint to resume from holds (0: a new run).
        method_state: the method's own state, JSON types, as the checkpoint holds it
            (``None``: none); what the method sets here is saved with every later
            checkpoint, opaque to ``tfquant train``.
    """

    initial_epoch: int
    method_state: dict | None

    def restore(self, model: Any) -> None:
        """Load the checkpoint's variables into ``model`` (its optimizer built)."""

    def save(self, model: Any, epochs: int, tag: str = "") -> None:
        """Checkpoint ``model`` as having trained ``epochs`` epochs (``tag``: a suffix for a
        second checkpoint after the same epoch, e.g. between two stages)."""


@dataclasses.dataclass
class FitContext:
    """What ``tfquant train`` hands :meth:`Method.fit`.

    Attributes:
        x, y: the training arrays (for an image folder: 20 batches, or all of it when the
            method ``reads_arrays``).
        batches: ``(epochs, initial_epoch) -> (dataset, steps_per_epoch)``: the training
            batches, which depend only on the seed and the epoch.
        validation_data: ``(x, y)`` held out.
        epochs, batch_size, learning_rate, seed, verbose: the run's (``learning_rate``
            already the method's default when the user gave none).
        options: the method's resolved options (:meth:`Method.resolve`).
        callbacks: the method's callbacks (:meth:`Method.callbacks`) followed by the run's
            (hard validation, the checkpoints' per-epoch save).
        checkpoints: where to checkpoint and resume (:class:`Checkpoints`).
        strategy: the ``tf.distribute`` strategy the model was built under, or ``None``.
        say: prints a progress line.
    """

    x: Any
    y: Any
    batches: Callable[[int, int], tuple[Any, int]]
    validation_data: tuple
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    verbose: Any
    options: dict
    callbacks: list
    checkpoints: Checkpoints
    strategy: Any = None
    say: Callable[[str], None] = print


class Method:
    """A training method: subclass it (or instantiate it with ``quantizers=``) and
    :func:`tfquant.methods.register` it.

    Class attributes a subclass sets: ``name`` (what ``--method`` takes), ``summary`` (one
    line of ``--method``'s help), ``options`` (its :class:`Option` s, whose names are
    ``tfquant train`` settings), ``learning_rate`` (the default), ``reads_arrays`` (its fit
    reads the training arrays, so an image folder is read whole) and ``compiles_itself``
    (its fit compiles the model, e.g. once per stage).

    Example:

    >>> from tfquant.methods import Method
    >>> m = Method("my-ste", quantizers=("ste_sign", "ste_sign"), summary="STE, mine")
    >>> m.quantizers()
    ('ste_sign', 'ste_sign')
    >>> from tfquant import zoo
    >>> [type(q).__name__ for q in zoo.quantizers_for(m)]
    ['SteSign', 'SteSign']
    """

    name: str = ""
    summary: str = ""
    options: Sequence[Option] = ()
    learning_rate: float = 1e-3
    reads_arrays: bool = False
    compiles_itself: bool = False

    def __init__(
        self,
        name: str | None = None,
        *,
        quantizers: tuple[Any, Any] | None = None,
        summary: str | None = None,
        learning_rate: float | None = None,
    ):
        if name is not None:
            self.name = name
        if summary is not None:
            self.summary = summary
        if learning_rate is not None:
            self.learning_rate = learning_rate
        self._quantizers = quantizers
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"Expected a method name, a non-empty str. Received: {self.name!r}")

    def __repr__(self) -> str:
        return f"<tfquant method {self.name!r}>"

    # ------------------------------------------------------------------ options
    def resolve(self, given: dict | None = None) -> dict:
        """The method's options: each declared option's ``given`` value, or its default
        where ``given`` has none (or ``None``).

        Raises:
            ConfigError: an option the method does not declare, or a value out of range.
        """
        given = dict(given or {})
        declared = {o.name: o for o in self.options}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ConfigError(
                f"Expected options of method {self.name!r} among {sorted(declared) or 'none'}. "
                f"Received: {unknown}"
            )
        resolved = {}
        for name, option in declared.items():
            value = option.check(given.get(name))
            resolved[name] = option.default if value is None else value
        return resolved

    def check(self, options: dict, epochs: int) -> None:
        """Check resolved ``options`` against the run (e.g. against its ``epochs``);
        raise :class:`~tfquant.errors.ConfigError`. The default checks nothing more."""

    # ------------------------------------------------------------------ building
    def quantizers(self, role: str = "hidden", **options: Any) -> tuple[Any, Any]:
        """Fresh ``(input_quantizer, kernel_quantizer)`` (instances, identifiers or
        ``None``) of a layer in ``role``: ``"hidden"`` (the zoo's quantized layers);
        ``"first"`` and ``"last"`` stay float in every built-in method. ``options`` are
        :meth:`resolve`'s."""
        if role not in ROLES:
            raise ConfigError(f"Expected role in {ROLES}. Received: {role!r}")
        if role != "hidden":
            return None, None
        if self._quantizers is None:
            raise NotImplementedError(f"method {self.name!r} gives no quantizers")
        return self._quantizers

    def optimizer(self, learning_rate: float, options: dict) -> Any:
        """The optimizer (default: Adam)."""
        from tfquant._keras import keras

        return keras.optimizers.Adam(learning_rate)

    def callbacks(self, model: Any, epochs: int, options: dict) -> list:
        """Callbacks of the method for ``model`` (built and compiled), ``epochs`` long."""
        return []

    def describe(self, epochs: int, options: dict) -> str | None:
        """A progress line saying how the method spends the epochs, or ``None``."""
        return None

    # ------------------------------------------------------------------ training
    def fit(self, model: Any, run: FitContext) -> Any:
        """Train ``model`` (compiled with :meth:`optimizer` unless ``compiles_itself``),
        resuming at ``run.checkpoints.initial_epoch``: one ``model.fit`` over the run's
        batches. ``tfquant train`` restores the checkpoint's variables before, unless the
        method ``compiles_itself`` (it then calls ``run.checkpoints.restore``). Returns what
        :meth:`report` reads (default ``None``)."""
        initial = run.checkpoints.initial_epoch
        if initial >= run.epochs:  # stopped after its last epoch: finalize
            return
        dataset, steps = run.batches(run.epochs, initial)
        model.fit(
            dataset,
            epochs=run.epochs,
            initial_epoch=initial,
            steps_per_epoch=steps,
            validation_data=run.validation_data,
            callbacks=run.callbacks,
            verbose=run.verbose,
            shuffle=False,  # the batches are shuffled per (seed, epoch) already
        )

    def finalize(self, model: Any, bn_data: Any, batch_size: int) -> Any:
        """Make the trained model deployable in place (:func:`tfquant.finalize`: exact
        quantized kernels, BatchNorm re-estimated on ``bn_data``)."""
        from tfquant.models import finalize

        return finalize(model, bn_data, batch_size=batch_size)

    def report(self, result: Any) -> dict | None:
        """What the method adds to ``report.json`` under its name, from what :meth:`fit`
        returned, or ``None``."""
        return None

    def report_markdown(self, section: dict) -> list[str]:
        """``report.md`` lines for :meth:`report`'s ``section``."""
        return []
