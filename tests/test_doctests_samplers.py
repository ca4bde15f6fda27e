"""Every ``Example:`` of the posterior samplers, their flow and the flow layers runs as a doctest."""

import doctest
import importlib
import pkgutil

import pytest

import invprob.priors.layers
import invprob.solvers.mcmc
import invprob.solvers.variational

SAMPLER_MODULES = [
    "invprob.solvers._posterior",
    "invprob.solvers.chain_stats",
    "invprob.solvers.pregenerator",
]


def _modules() -> list[str]:
    names = list(SAMPLER_MODULES)
    for package in (invprob.solvers.variational, invprob.solvers.mcmc, invprob.priors.layers):
        names.append(package.__name__)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + ".")]
    return sorted(names)


MODULES = _modules()

# the main public classes and functions each carry an Example:
MUST_HAVE_EXAMPLES = {
    "invprob.solvers.variational.amortized": ["AmortizedPosterior"],
    "invprob.solvers.variational.per_measurement": ["SVI", "FlowPosterior"],
    "invprob.solvers.variational.fitting": ["PlateauRule"],
    "invprob.solvers.mcmc.langevin": ["Langevin"],
    "invprob.solvers.mcmc.pl_mcmc": ["PLMCMC"],
    "invprob.solvers.chain_stats": [""],
    "invprob.solvers.pregenerator": [""],
}


def test_every_module_is_found():
    for name in ("invprob.solvers.variational.amortized", "invprob.solvers.mcmc.chains", "invprob.priors.layers.linear"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest example(s) failed in {name} (output above)"


@pytest.mark.parametrize("name", sorted(MUST_HAVE_EXAMPLES))
def test_main_objects_have_examples(name):
    module = importlib.import_module(name)
    for attr in MUST_HAVE_EXAMPLES[name]:
        doc = (getattr(module, attr) if attr else module).__doc__ or ""
        assert "Example:" in doc and ">>>" in doc, f"{name}.{attr or '(module)'} has no Example:"
