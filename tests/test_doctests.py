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


# The main public classes and functions each carry an ``Example:`` (a doctest run above).
MUST_HAVE_EXAMPLES = {
    "invprob.solvers.base": ["solve", "describe_method", "list_methods"],
    "invprob.solvers.driver": [""],
    "invprob.solvers.iflow": [""],
    "invprob.solvers.csgm": [""],
    "invprob.solvers.variational.amortized": ["AmortizedPosterior"],
    "invprob.solvers.variational.per_measurement": ["SVI", "FlowPosterior"],
    "invprob.solvers.mcmc.langevin": ["Langevin"],
    "invprob.solvers.mcmc.pl_mcmc": ["PLMCMC"],
    "invprob.priors.pretrained": ["load_prior"],
    "invprob.operators.matrix": ["RandomGaussian"],
    "invprob.operators.masks": ["RandomMask", "BlockMask", "HalfMask"],
    "invprob.operators.superres": ["SuperResolution"],
    "invprob.operators.ct": ["LimitedAngleCT"],
    "invprob.apps.ct_uq.workflow": ["ct_workflow"],
    "invprob.data.mnist": [""],
    "invprob.progress": [""],
}


@pytest.mark.parametrize("name", sorted(MUST_HAVE_EXAMPLES))
def test_main_objects_have_examples(name):
    module = importlib.import_module(name)
    for attribute in MUST_HAVE_EXAMPLES[name]:
        obj = getattr(module, attribute) if attribute else module
        assert ">>>" in (obj.__doc__ or ""), f"{name}.{attribute or '(module)'} has no Example: doctest"
