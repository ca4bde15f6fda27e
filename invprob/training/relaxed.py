"""Training relaxed injective flows (:class:`~invprob.priors.relaxed.RelaxedInjectiveFlow`).

One :func:`~invprob.training.loop.fit` phase (``"injflow"``) minimises eq. 9 or eq. 10 of the
relaxed-flow paper with the penalty weights increased every step,
``mu = mu_in = 1 + step**nu / 1000`` (paper sec. 4, ``nu`` in {1, 1.3}); then a latent density
is fitted to the encoded training set (sec. 2.2.1) and the prior is saved.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from ..priors.relaxed import Objective, RelaxedInjectiveFlow, injflow_loss
from .loop import FitOptions, ValidateFn, fit


def penalty_weight(step: int, nu: float) -> float:
    """``1 + step**nu / 1000``: the increasing weight of the reconstruction and injectivity penalties."""
    return 1.0 + step**nu / 1000.0


def encode_dataset(prior: RelaxedInjectiveFlow, dataset: Dataset, batch_size: int = 256) -> torch.Tensor:
    """Amortised codes ``h(x)`` of every item of ``dataset``, shape ``(len(dataset), d)``."""
    codes = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])
            codes.append(prior.amortised_encode(batch.to(prior.device, prior.dtype)))
    return torch.cat(codes)


def train_relaxed_flow(
    prior: RelaxedInjectiveFlow,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    *,
    objective: Objective = "log_frobenius",
    eta: float = 0.1,
    nu: float = 1.0,
    lam: float = 1.0,
    fd_eps: float | None = None,
    density: Literal["gaussian", "gmm"] = "gmm",
    n_components: int = 10,
    density_seed: int = 0,
    validate: ValidateFn | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    **fit_options: Any,
) -> dict[str, list]:
    """Train ``prior`` on ``dataset``, fit its post-fit latent density and save it.

    Args:
        objective: ``"log_frobenius"`` (eq. 9, InjFlow^ln) or ``"frobenius"`` (eq. 10, InjFlow,
            with the fixed ``lam``).
        eta: singular-value threshold of the local-injectivity penalty (0.1 in the paper).
        nu: exponent of the penalty schedule :func:`penalty_weight`.
        fd_eps: use the finite-difference Jacobian-vector product of eq. 8 with this step
            instead of the exact product.
        density, n_components, density_seed: the post-fit latent density (``"gmm"`` with 10
            components, or one full-covariance ``"gaussian"``), fitted by scikit-learn.
        fit_options: options of :class:`~invprob.training.loop.FitOptions` (``steps`` etc.).

    The training prior weight is ``1 / (2 prior.prior_std^2)``. Checkpoints go to
    ``out_dir/injflow-state/``; after the last step the prior, with its fitted density, is saved
    to ``out_dir/prior/``. Returns the training history.
    """
    if objective not in ("log_frobenius", "frobenius"):
        raise ValueError(f"objective: expected 'log_frobenius' or 'frobenius', got {objective!r}")
    if not (isinstance(eta, (int, float)) and eta > 0 and isinstance(nu, (int, float)) and nu > 0 and lam > 0):
        raise ValueError(f"eta, nu, lam: expected positive numbers, got {eta!r}, {nu!r}, {lam!r}")
    if density not in ("gaussian", "gmm"):
        raise ValueError(f"density: expected 'gaussian' or 'gmm', got {density!r}")
    opts = FitOptions(**{"phase": "injflow", **fit_options})

    def loss_fn(
        model: RelaxedInjectiveFlow, batch: torch.Tensor, generator: torch.Generator, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        weight = penalty_weight(step, nu)
        batch = batch.to(model.device, model.dtype)
        return injflow_loss(
            model, batch, generator, objective=objective, mu=weight, mu_in=weight, eta=eta, lam=lam, fd_eps=fd_eps
        )

    history = fit(
        prior,
        loss_fn,
        dataset,
        out_dir,
        validate=validate,
        resume=resume,
        stop_after=stop_after,
        pass_step=True,
        **opts.model_dump(),
    )
    if history["step"] and history["step"][-1] == opts.steps:
        from ..priors.io import save_prior  # deferred: invprob.priors.io imports this package

        prior.fit_latent_density(encode_dataset(prior, dataset), density, n_components, density_seed)
        save_prior(
            prior,
            Path(out_dir) / "prior",
            trainer="train_relaxed_flow",
            objective=objective,
            steps=opts.steps,
            final_loss=history["loss"][-1],
        )
    return history
