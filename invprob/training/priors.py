"""Training of the flow priors: TRUMPET in two phases (paper sec. 2.3) and maximum-likelihood flows.

Both functions train in place with :func:`invprob.training.fit` (Adam, gradient clipping, seeded
data order, atomic resumable checkpoints under ``out_dir/<phase>-state/``) and finally write the
prior to ``out_dir`` with :func:`invprob.priors.save_prior`, recording the command, the options,
the final validation metrics and the wall time. A killed run is continued by calling again with
``resume=True``; it ends with the same parameters as an uninterrupted run.

Example (the digits TRUMPET)::

    from invprob.data import load_dataset
    from invprob.priors import TRUMPET, load_prior_file
    from invprob.training import train_trumpet

    prior = TRUMPET((1, 32, 32), 64, hidden=16, latent_hidden=64)
    report = train_trumpet(prior, load_dataset("digits", "train"), "runs/trumpet-digits",
                           val_dataset=load_dataset("digits", "test"), mse_steps=4000, ml_steps=2000)
    prior = load_prior_file("runs/trumpet-digits")
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch.utils.data import Dataset

from ..priors.base import Prior
from ..priors.trumpet import TRUMPET
from ..checkpoint import CONFIG_FILE
from .common import (
    DequantisedOptions,
    TrainOptions,
    Validator,
    bits_per_dim_validator,
    dequantise,
    finish,
    fit_options,
    nats_to_bpd,
    relative_error,
    validation_batch,
)
from .loop import LossFn, fit

class TrumpetTrainOptions(TrainOptions):
    """Options of :func:`train_trumpet` (unknown keys are rejected)."""

    mse_steps: int = Field(ge=1, description="phase 1: steps of eq. 3 on the injective part")
    ml_steps: int = Field(ge=0, description="phase 2: steps of eq. 4 on the latent flow")
    lr: float = Field(1e-3, gt=0)
    ml_lr: float | None = Field(None, gt=0, description="phase-2 learning rate (default: lr)")
    cycle_weight: float = Field(0.0, ge=0, description="weight of the latent cycle-consistency term (0: off)")
    cycle_batch: int = Field(8, ge=1, description="images of each batch used by the cycle term (it costs a pass)")


class FlowTrainOptions(DequantisedOptions):
    """Options of :func:`train_flow` (unknown keys are rejected)."""


def train_trumpet(
    prior: TRUMPET,
    dataset: Dataset | torch.Tensor,
    out_dir: str | os.PathLike,
    *,
    val_dataset: Dataset | torch.Tensor | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    command: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a TRUMPET in two phases (paper sec. 2.3) and save it to ``out_dir``.

    Phase 1 (``"mse"``, ``mse_steps``) fits the injective part ``g`` alone with eq. 3,

        L_MSE = mean_i ||x_i - g(g^dagger(x_i))||^2 / n + cycle_weight * mean_j ||g^dagger(g(z'_j)) - z'_j||^2 / d,

    ``z'_i = g^dagger(x_i)``; the second (latent cycle-consistency) term, on the first
    ``cycle_batch`` images of the batch, penalises pseudo-inverses that stop being left inverses
    (ill-conditioned injective convolutions). It is off by default: on the digits it made phase 1
    diverge (the term jumped to 1e18 within 60 steps at lr 3e-4), while eq. 3 alone trains stably. Phase 2 (``"ml"``,
    ``ml_steps``) fits the latent flow ``h`` and its Gaussian base alone by maximum likelihood of
    the frozen preimages ``z'_i`` (eq. 4), reported in nats per latent dimension.

    Validation (every ``validate_every`` steps and at the end of each phase, on the first
    ``n_val`` images of ``val_dataset``, default the training set): ``rel_error`` =
    mean ``||x - P(x)|| / ||x||`` and ``latent_nll``. ``stop_after`` ends the call after that many
    steps (both phases together) without saving the final prior, as a kill would; the returned
    dict then has ``finished=False``. See :class:`TrumpetTrainOptions` for the options.
    """
    opts = TrumpetTrainOptions(**options)
    if not isinstance(prior, TRUMPET):
        raise TypeError(f"prior: expected a TRUMPET, got {type(prior).__name__}")
    start = time.perf_counter()
    val = validation_batch(val_dataset if val_dataset is not None else dataset, prior, opts.n_val)
    common = fit_options(opts)
    g_params = list(prior.injective.parameters())
    h_params = [*prior.latent_flow.parameters(), prior.base_mean, prior.base_log_std]
    budget = _Budget(stop_after, out_dir)
    phase1 = fit(
        prior, _mse_loss(opts.cycle_weight, opts.cycle_batch), dataset, out_dir, params=g_params, validate=_rel_error(val),
        resume=resume, stop_after=budget.for_phase("mse"), steps=opts.mse_steps, lr=opts.lr, phase="mse", **common,
    )
    if budget.stopped("mse", opts.mse_steps):
        return {"finished": False, "mse": phase1}
    history = {"mse": phase1}
    if opts.ml_steps:
        history["ml"] = fit(
            prior, _ml_loss, dataset, out_dir, params=h_params, validate=_latent_nll(val), resume=resume,
            stop_after=budget.for_phase("ml"), steps=opts.ml_steps, lr=opts.ml_lr or opts.lr, phase="ml", **common,
        )
        if budget.stopped("ml", opts.ml_steps):
            return {"finished": False, **history}
    with torch.no_grad():
        metrics = {**_rel_error(val)(prior.eval()), **_latent_nll(val)(prior)}
    return finish(prior, out_dir, "train_trumpet", opts, metrics, history, start, command)


def train_flow(
    prior: Prior,
    dataset: Dataset | torch.Tensor,
    out_dir: str | os.PathLike,
    *,
    val_dataset: Dataset | torch.Tensor | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    command: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Maximum-likelihood training of a prior with a tractable ``log_prob`` (e.g. RealNVP); saves to ``out_dir``.

    Minimises ``-mean_i log p(x_i + u_i) / n`` (eq. 1) with dequantisation noise
    ``u_i ~ U(-delta/2, delta/2)^n``, ``delta = data_range / n_levels`` (no noise if ``n_levels``
    is None). Validation (noise-free, first ``n_val`` images of ``val_dataset``, default the
    training set) reports ``bits_per_dim`` (:func:`~invprob.training.common.bits_per_dim`). ``stop_after`` ends the call
    early without saving the prior (``finished=False``). See :class:`FlowTrainOptions`.
    """
    opts = FlowTrainOptions(**options)
    if not isinstance(prior, Prior):
        raise TypeError(f"prior: expected an invprob Prior, got {type(prior).__name__}")
    start = time.perf_counter()
    val = validation_batch(val_dataset if val_dataset is not None else dataset, prior, opts.n_val)

    def loss_fn(model: Prior, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        batch = dequantise(batch.to(model.device, model.dtype), opts.delta, generator)
        nll = -model.log_prob(batch).mean() / model.data_dim
        return nll, {"bits_per_dim": float(nats_to_bpd(nll.detach(), opts.bpd_levels, opts.data_range))}

    validate = bits_per_dim_validator(val, opts)
    history = fit(
        prior, loss_fn, dataset, out_dir, validate=validate, resume=resume, stop_after=stop_after,
        steps=opts.steps, lr=opts.lr, phase="ml", **fit_options(opts),
    )
    if history["step"][-1] < opts.steps:
        return {"finished": False, "ml": history}
    with torch.no_grad():
        metrics = validate(prior.eval())
    return finish(prior, out_dir, "train_flow", opts, metrics, {"ml": history}, start, command)


def _mse_loss(cycle_weight: float, cycle_batch: int) -> LossFn:
    def loss_fn(model: TRUMPET, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        batch = batch.to(model.device, model.dtype)
        z_prime, _ = model.g_pinv(batch)
        recon, _ = model.g(z_prime)
        mse = (recon - batch).pow(2).mean()
        loss = mse
        metrics = {"mse": float(mse.detach())}
        if cycle_weight:
            cycle = (model.g_pinv(recon[:cycle_batch])[0] - z_prime[:cycle_batch].detach()).pow(2).mean()
            loss = loss + cycle_weight * cycle
            metrics["cycle"] = float(cycle.detach())
        return loss, metrics

    return loss_fn


def _ml_loss(model: TRUMPET, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    with torch.no_grad():
        z_prime = model.g_pinv(batch.to(model.device, model.dtype))[0]
    nll = -model.latent_flow_log_prob(z_prime).mean() / model.latent_dim
    return nll, {"latent_nll": float(nll.detach())}


def _rel_error(val: torch.Tensor) -> Validator:
    def validate(model: TRUMPET) -> dict[str, float]:
        return {"rel_error": relative_error(val, model.project(val))}

    return validate


def _latent_nll(val: torch.Tensor) -> Validator:
    def validate(model: TRUMPET) -> dict[str, float]:
        z_prime = model.g_pinv(val)[0]
        return {"latent_nll": float(-model.latent_flow_log_prob(z_prime).mean() / model.latent_dim)}

    return validate


class _Budget:
    """Splits ``stop_after`` (steps of this call) between the phases, reading where each phase stands."""

    def __init__(self, stop_after: int | None, out_dir: str | os.PathLike) -> None:
        self.left, self.out_dir, self.start = stop_after, Path(out_dir), {}

    def _step(self, phase: str) -> int:
        path = self.out_dir / f"{phase}-state" / CONFIG_FILE
        return int(json.loads(path.read_text())["step"]) if path.is_file() else 0

    def for_phase(self, phase: str) -> int | None:
        self.start[phase] = self._step(phase)
        return self.left

    def stopped(self, phase: str, steps: int) -> bool:
        end = self._step(phase)
        if self.left is not None:
            self.left -= end - self.start[phase]
        return end < steps or (self.left is not None and self.left <= 0)

