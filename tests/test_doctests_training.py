"""Every ``Example:`` of the training package, the checkpoint format and the prior families runs as a doctest."""

import doctest
import importlib
import pkgutil

import pytest

import invprob.training

PRIOR_MODULES = [
    "invprob.checkpoint",
    "invprob.priors.io",
    "invprob.priors.pretrained",
    "invprob.priors.linear_gaussian",
    "invprob.priors.logdet",
    "invprob.priors.nif",
    "invprob.priors.realnvp",
    "invprob.priors.relaxed",
]


def _modules() -> list[str]:
    names = [*PRIOR_MODULES, invprob.training.__name__]
    names += [info.name for info in pkgutil.walk_packages(invprob.training.__path__, prefix="invprob.training.")]
    return sorted(names)


MODULES = _modules()


def test_every_module_is_found():
    assert {"invprob.training.loop", "invprob.training.distributed", "invprob.training.common"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no Example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest example(s) failed in {name} (output above)"
