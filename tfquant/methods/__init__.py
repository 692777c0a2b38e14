"""Training methods, one object each, in one registry.

Each method (:class:`Method`) says which quantizers a layer gets, its options, its
optimizer and callbacks, how it fits, finalizes and reports; ``tfquant train``, its
command line and the zoo read all of it from here (:func:`get`, :func:`names`). The
built-in methods, in ``--method``'s order:

* ``md-tanh-s``, ``md-softmax-s``: mirror descent (:mod:`tfquant.methods.md`);
* ``binary-relax``: BinaryRelax (:mod:`tfquant.methods.binary_relax`);
* ``ste``, ``dorefa``, ``float``: one ``fit`` with Adam (:mod:`tfquant.methods.standard`);
* ``tsq``: Two-Step Quantization (:mod:`tfquant.methods.tsq`);
* ``cpq``: CPQ with DropBits (:mod:`tfquant.methods.cpq`).

User code registers its own the same way (:func:`register`); ``docs/methods.md`` says
what each method implements and which of its choices are reconstructions.

May import: :mod:`tfquant.quantizers`, :mod:`tfquant.layers`, :mod:`tfquant.models`,
:mod:`tfquant.graph`, :mod:`tfquant.optimizers`, :mod:`tfquant.callbacks` and
:mod:`tfquant.errors` (never :mod:`tfquant.train`, :mod:`tfquant.zoo` or the CLI).
"""

from tfquant.methods import binary_relax, tsq
from tfquant.methods.base import Checkpoints, FitContext, Method, Option
from tfquant.methods.binary_relax import BinaryRelaxMethod
from tfquant.methods.cpq import CPQ
from tfquant.methods.md import MirrorDescentMethod
from tfquant.methods.registry import declaring, get, names, options, register, unregister
from tfquant.methods.standard import STE, DoReFa, Float

# the default of `tfquant train --method`: the README's main job
DEFAULT = "md-tanh-s"

__all__ = [
    "DEFAULT",
    "Checkpoints",
    "FitContext",
    "Method",
    "Option",
    "binary_relax",
    "declaring",
    "get",
    "names",
    "options",
    "register",
    "tsq",
    "unregister",
]

for _method in (
    MirrorDescentMethod("tanh"),
    MirrorDescentMethod("softmax"),
    BinaryRelaxMethod(),
    STE(),
    tsq.TSQ(),
    CPQ(),
    DoReFa(),
    Float(),
):
    register(_method)
del _method
