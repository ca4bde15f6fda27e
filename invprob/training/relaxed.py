"""Training relaxed injective flows (:class:`~invprob.priors.relaxed.RelaxedInjectiveFlow`).

One phase (``"injflow"``) of the trainer base (:func:`~invprob.training.common.run_phases`)
minimises eq. 9 or eq. 10 with the penalty weights increased every step,
``mu = mu_in = 1 + step**nu / 1000`` (sec. 4, ``nu`` in {1, 1.3}); then a latent density is
fitted to the encoded training set (sec. 2.2.1) and the prior is written to ``out_dir`` like the
other priors (atomic, resumable checkpoints under ``out_dir/injflow-state/``).

References:
    Kumar, Poole, Murphy (2020), "Regularized Autoencoders via Relaxed Injective Probability Flow".

Example:
    >>> import tempfile, torch
    >>> from invprob.priors import RelaxedInjectiveFlow
    >>> penalty_weight(1000, 1.0)
    2.0
    >>> prior = RelaxedInjectiveFlow((1, 8, 8), 4, channels=(4, 8))
    >>> images = torch.rand(16, 1, 8, 8) * 2 - 1
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     report = train_relaxed_flow(prior, images, tmp, steps=2, batch_size=8, n_components=2, progress=False)
    >>> report["finished"], sorted(report["metrics"])
    (True, ['latent_nll', 'rel_error'])
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
from pydantic import Field
from torch.utils.data import Dataset

from .._checks import check_int
from ..priors.relaxed import Objective, RelaxedInjectiveFlow, injflow_loss
from .common import Phase, SinglePhaseOptions, mean_relative_error, prepare, run_phases
from .loop import stack_items


class RelaxedTrainOptions(SinglePhaseOptions):
    """Options of :func:`train_relaxed_flow` (unknown keys are rejected)."""

    objective: Objective = Field("log_frobenius", description="eq. 9 (InjFlow^ln) or eq. 10 ('frobenius', InjFlow)")
    eta: float = Field(0.1, gt=0, description="singular-value threshold of the local-injectivity penalty")
    nu: float = Field(1.0, gt=0, description="exponent of the penalty schedule 1 + step**nu / 1000")
    lam: float = Field(1.0, gt=0, description="fixed lambda of eq. 10")
    fd_eps: float | None = Field(None, gt=0, description="finite-difference JVP step (eq. 8); None: exact JVP")
    density: Literal["gaussian", "gmm"] = Field("gmm", description="post-fit latent density")
    n_components: int = Field(10, ge=1, description="components of the post-fit mixture")
    density_seed: int = Field(0, ge=0)


def penalty_weight(step: int, nu: float) -> float:
    """``1 + step**nu / 1000``: the increasing weight of the reconstruction and injectivity penalties."""
    return 1.0 + step**nu / 1000.0


def encode_dataset(prior: RelaxedInjectiveFlow, dataset: Dataset | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Amortised codes ``h(x)`` of every item of ``dataset``, shape ``(len(dataset), d)``."""
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if len(dataset) == 0:
        raise ValueError("dataset: expected at least one image, got an empty dataset")
    codes = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = stack_items([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            codes.append(prior.amortised_encode(batch.to(prior.device, prior.dtype)))
    return torch.cat(codes)


def train_relaxed_flow(
    prior: RelaxedInjectiveFlow,
    dataset: Dataset | torch.Tensor,
    out_dir: str | os.PathLike,
    *,
    val_dataset: Dataset | torch.Tensor | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    command: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train ``prior`` with eq. 9 / eq. 10, fit its post-fit latent density and save it to ``out_dir``.

    The training prior weight is ``1 / (2 prior.prior_std^2)``; ``objective="frobenius"`` uses the
    fixed ``lam``; ``fd_eps`` switches to the finite-difference product of eq. 8. After the last
    step the codes ``h(x)`` of the whole training set get the post-fit density (``"gmm"`` with
    ``n_components`` full-covariance components, or one full-covariance ``"gaussian"``, fitted by
    scikit-learn). Validation (first ``n_val`` images of ``val_dataset``, default the training
    set) reports ``rel_error = mean ||x - g(h(x))|| / ||x||``; the final metrics add
    ``latent_nll`` (mean ``-log p_z(h(x)) / d`` under the post-fit density). ``stop_after`` ends
    the call early without saving (``finished=False``). See :class:`RelaxedTrainOptions`.
    """
    opts, val = prepare(prior, RelaxedInjectiveFlow, RelaxedTrainOptions, options, dataset, val_dataset, "train_relaxed_flow")

    def loss_fn(
        model: RelaxedInjectiveFlow, batch: torch.Tensor, generator: torch.Generator, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        weight = penalty_weight(step, opts.nu)
        return injflow_loss(
            model, batch.to(model.device, model.dtype), generator, objective=opts.objective,
            mu=weight, mu_in=weight, eta=opts.eta, lam=opts.lam, fd_eps=opts.fd_eps,
        )

    def validate(model: RelaxedInjectiveFlow) -> dict[str, float]:
        return {"rel_error": mean_relative_error(val, model.decoder(model.amortised_encode(val)))}

    def fit_density() -> None:
        prior.fit_latent_density(encode_dataset(prior, dataset), opts.density, opts.n_components, opts.density_seed)

    def final_metrics(model: RelaxedInjectiveFlow) -> dict[str, float]:
        latent_nll = -model.latent_log_prob(model.amortised_encode(val)).mean() / model.latent_dim
        return {**validate(model), "latent_nll": float(latent_nll)}

    phase = Phase("injflow", loss_fn, opts.steps, opts.lr, validate, pass_step=True)
    return run_phases(
        prior, dataset, out_dir, [phase], trainer="train_relaxed_flow", opts=opts, resume=resume, stop_after=stop_after,
        command=command, final_metrics=final_metrics, after_training=fit_density,
    )
