"""The examples in the public docstrings run (STYLE.md 5)."""

import doctest

import pytest

import tfquant
from tfquant import callbacks, layers, quantizers
from tfquant.methods import binary_relax, tsq
from tfquant.optimizers import mirror_descent


@pytest.mark.parametrize(
    "module",
    [quantizers, layers, mirror_descent, callbacks, binary_relax, tsq],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, extraglobs={"tfquant": tfquant})
    assert result.attempted > 0 and result.failed == 0
