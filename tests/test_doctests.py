"""Every ``Example:`` in the package's docstrings runs, and gives the output it shows."""

import doctest
import importlib
import pkgutil

import pytest

import invprob

OPTIONAL = ("astra", "torch_radon")


def _modules() -> list[str]:
    names = [invprob.__name__]
    for info in pkgutil.walk_packages(invprob.__path__, prefix="invprob."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    try:
        module = importlib.import_module(name)
    except ImportError as err:
        if any(opt in str(err) for opt in OPTIONAL):
            pytest.skip(f"{name} needs an optional package: {err}")
        raise
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"
