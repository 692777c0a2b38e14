"""The examples in the public docstrings run."""

import doctest

import pytest

import tfquant
from tfquant import callbacks, layers, quantizers
from tfquant.methods import base, binary_relax
from tfquant.methods.tsq import solver as tsq_solver
from tfquant.optimizers import mirror_descent
from tfquant.quantizers import base as quantizer_base
from tfquant.quantizers import cpq, sparse


@pytest.mark.parametrize(
    "module",
    # each module that defines classes with examples: doctest runs only what a module defines
    [quantizers, quantizer_base, sparse, cpq, layers, mirror_descent, callbacks, binary_relax]
    + [tsq_solver, base],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, extraglobs={"tfquant": tfquant})
    assert result.attempted > 0 and result.failed == 0
