"""invprob: imaging inverse problems with generative priors.

Recover an image ``x`` from ``y = A(x) + noise`` with a pretrained generative prior, as a MAP
estimate or as posterior samples::

    import invprob
    prior = invprob.load_prior("trumpet-digits")
    op = invprob.operators.RandomGaussian(prior.data_shape, m=250)
    result = invprob.solve(op, prior, y, method="iflow-l")

The names below are imported on first use, so ``import invprob`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "solve": "invprob.solvers",
    "list_methods": "invprob.solvers",
    "describe_method": "invprob.solvers",
    "Result": "invprob.solvers",
    "load_prior": "invprob.priors.pretrained",
    "list_priors": "invprob.priors.pretrained",
    "load_prior_file": "invprob.priors.io",
    "load_dataset": "invprob.data",
    "list_datasets": "invprob.data",
    "add_noise": "invprob.operators",
    "operators": "invprob.operators",
    "priors": "invprob.priors",
    "solvers": "invprob.solvers",
    "data": "invprob.data",
    "metrics": "invprob.metrics",
    "training": "invprob.training",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'invprob' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__ == f"invprob.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
