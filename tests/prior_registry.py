"""Registry of tiny prior factories for the shared Prior contract suite (tests/test_prior_contract.py).

Each entry maps a name to a zero-argument factory returning a small, freshly built prior in
float64 (fast enough that every contract test runs in well under a second). To add a prior
family, add one entry; every contract test then runs on it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from invprob.priors import Prior

PRIOR_FACTORIES: dict[str, Callable[[], Prior]] = {}


def register(name: str) -> Callable[[Callable[[], Prior]], Callable[[], Prior]]:
    """Decorator adding a factory to :data:`PRIOR_FACTORIES` under ``name``."""

    def wrap(factory: Callable[[], Prior]) -> Callable[[], Prior]:
        if name in PRIOR_FACTORIES:
            raise ValueError(f"prior registry: {name!r} registered twice")
        PRIOR_FACTORIES[name] = factory
        return factory

    return wrap


def build(name: str) -> Prior:
    """A fresh instance of the registered prior ``name`` (float64, eval mode, seeded)."""
    torch.manual_seed(0)
    return PRIOR_FACTORIES[name]().double().eval()


@register("nif")
def _nif() -> Prior:
    from invprob.priors import NIF

    prior = NIF(
        (1, 8, 8), 3, n_scales=1, n_steps=1, hidden=4, unet_depth=0, n_latent_steps=2, latent_hidden=8, n_bound_samples=2
    )
    with torch.no_grad():
        prior.log_prob(torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)))  # actnorm initialisation
    return prior


@register("relaxed_flow")
def _relaxed_flow() -> Prior:
    from invprob.priors import RelaxedInjectiveFlow

    prior = RelaxedInjectiveFlow((1, 8, 8), 3, channels=(4, 8), refine_steps=10)
    prior.fit_latent_density(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), "gmm", n_components=2)
    return prior


@register("trumpet-linear")
def _trumpet_linear() -> Prior:
    from invprob.priors import TRUMPET

    return TRUMPET((1, 8, 8), 16, n_scales=2, hidden=8, unet_depth=1, n_latent_steps=2, latent_hidden=16)


@register("trumpet-relu")
def _trumpet_relu() -> Prior:
    from invprob.priors import TRUMPET

    return TRUMPET((1, 8, 8), 8, n_scales=2, hidden=8, unet_depth=1, n_latent_steps=2, latent_hidden=16, variant="relu")


@register("trumpet-affine-latent")
def _trumpet_affine_latent() -> Prior:
    from invprob.priors import TRUMPET

    return TRUMPET((1, 8, 8), 16, n_scales=2, hidden=8, unet_depth=1, latent_flow="linear")


@register("realnvp")
def _realnvp() -> Prior:
    from invprob.priors import RealNVP

    return RealNVP((1, 8, 8), n_scales=2, n_steps=2, hidden=8, unet_depth=1)
