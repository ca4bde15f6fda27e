"""Every ``Example:`` in ``invprob.operators`` runs: doctest on each of its modules."""

import doctest
import importlib
import pkgutil

import pytest

import invprob.operators


def _modules():
    names = [invprob.operators.__name__]
    for info in pkgutil.walk_packages(invprob.operators.__path__, prefix=invprob.operators.__name__ + "."):
        names.append(info.name)
    return sorted(names)


MODULES = _modules()


def test_every_module_is_found():
    assert "invprob.operators.radon.geometry" in MODULES and "invprob.operators.ct" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest example(s) failed in {name} (output above)"
