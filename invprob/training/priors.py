"""Training of the flow priors: TRUMPET in two phases and maximum-likelihood flows.

Both functions train in place through the trainer base (:func:`~invprob.training.common.run_phases`:
:func:`invprob.training.fit` with Adam, gradient clipping, seeded data order, atomic resumable
checkpoints under ``out_dir/<phase>-state/``, one process or many under ``torchrun``) and finally
write the prior to ``out_dir`` with :func:`invprob.priors.save_prior`, recording the command, the
options, the final validation metrics and the wall time. A killed run is continued by calling
again with ``resume=True``; it ends with the same parameters as an uninterrupted run.

References:
    Kothari, Khorashadizadeh, de Hoop, Dokmanić (2021), "TRUMPETs: Injective Flows for Inference
    and Inverse Problems" (the two-phase training, sec. 2.3, eqs. 3-4). Dinh, Sohl-Dickstein, Bengio (2017),
    "Density estimation using Real NVP" (maximum likelihood with dequantisation, eq. 1).

Example:
    >>> import tempfile, torch
    >>> from invprob.priors import TRUMPET
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> prior = TRUMPET((1, 8, 8), 4, n_scales=2, hidden=4, unet_depth=1, n_latent_steps=1, latent_hidden=8)
    >>> images = torch.rand(16, 1, 8, 8) * 2 - 1
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     report = train_trumpet(prior, images, tmp, mse_steps=2, ml_steps=2, batch_size=8, progress=False)
    >>> report["finished"], sorted(report["metrics"])
    (True, ['latent_nll', 'rel_error'])
    >>> from invprob.priors import RealNVP
    >>> flow = RealNVP((1, 8, 8), n_scales=1, n_steps=1, hidden=4, unet_depth=1)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     report = train_flow(flow, images, tmp, steps=2, batch_size=8, progress=False)
    >>> sorted(report["metrics"])
    ['bits_per_dim']
"""

from __future__ import annotations

import os
from typing import Any

import torch
from pydantic import Field
from torch.utils.data import Dataset

from ..priors.base import Prior, layers_initialized
from ..priors.trumpet import TRUMPET
from .common import (
    DequantisedOptions,
    Phase,
    TrainOptions,
    Validator,
    bits_per_dim_validator,
    dequantise,
    mean_relative_error,
    nats_to_bpd,
    prepare,
    run_phases,
)
from .loop import LossFn

class TrumpetTrainOptions(TrainOptions):
    """Options of :func:`train_trumpet` (unknown keys are rejected)."""

    mse_steps: int = Field(500, ge=0, description="phase 1: steps of eq. 3 on the injective part (the shipped priors use 2500+; "
                           "0 keeps a trained one, see adopt_injective)")
    ml_steps: int = Field(200, ge=0, description="phase 2: steps of eq. 4 on the latent flow")
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
    """Train a TRUMPET in two phases and save it to ``out_dir``.

    Phase 1 (``"mse"``, ``mse_steps``) fits the injective part ``g`` alone with eq. 3,

        L_MSE = mean_i ||x_i - g(g^dagger(x_i))||^2 / n + cycle_weight * mean_j ||g^dagger(g(z'_j)) - z'_j||^2 / d,

    ``z'_i = g^dagger(x_i)``; the second (latent cycle-consistency) term, on the first
    ``cycle_batch`` images of the batch, penalises pseudo-inverses that stop being left inverses
    (off by default; see benchmarks/BENCHMARKS.md for its effect on the digits). Phase 2 (``"ml"``,
    ``ml_steps``) fits the latent flow ``h`` and its Gaussian base alone by maximum likelihood of
    the frozen preimages ``z'_i`` (eq. 4), reported in nats per latent dimension.

    Validation (every ``validate_every`` steps and at the end of each phase, on the first
    ``n_val`` images of ``val_dataset``, default the training set): ``rel_error`` =
    mean ``||x - P(x)|| / ||x||`` and ``latent_nll``. ``stop_after`` ends the call after that many
    steps (both phases together) without saving the final prior, as a kill would; the returned
    dict then has ``finished=False``. See :class:`TrumpetTrainOptions` for the options.
    """
    opts, val = prepare(prior, TRUMPET, TrumpetTrainOptions, options, dataset, val_dataset, "train_trumpet")
    if opts.mse_steps == 0 and opts.ml_steps == 0:
        raise ValueError("mse_steps, ml_steps: expected at least one step over the two phases, got 0 and 0")
    if opts.mse_steps == 0 and not layers_initialized(prior.injective):
        raise ValueError("mse_steps: 0 keeps the injective part as it is, so it must be trained (see adopt_injective); "
                         "got one whose actnorms are not initialised")
    g_params = list(prior.injective.parameters())
    h_params = [*prior.latent_flow.parameters(), prior.base_mean, prior.base_log_std]
    phases = [
        Phase("mse", _mse_loss(opts.cycle_weight, opts.cycle_batch), opts.mse_steps, opts.lr, _rel_error(val), g_params),
        Phase("ml", _ml_loss, opts.ml_steps, opts.ml_lr or opts.lr, _latent_nll(val), h_params),
    ]
    return run_phases(
        prior, dataset, out_dir, phases, trainer="train_trumpet", opts=opts, resume=resume, stop_after=stop_after,
        command=command, final_metrics=lambda p: {**_rel_error(val)(p), **_latent_nll(val)(p)},
    )


#: The TRUMPET config keys that shape its injective part ``g`` (the others shape the latent flow ``h``).
INJECTIVE_KEYS = ("data_shape", "latent_dim", "n_scales", "n_bijective", "hidden", "unet_depth", "variant", "gamma")


def adopt_injective(prior: TRUMPET, source: TRUMPET) -> TRUMPET:
    """Copy the trained injective part ``g`` of ``source`` into ``prior`` (in place) and return ``prior``.

    Phase 2 of :func:`train_trumpet` fits the latent flow ``h`` by maximum likelihood of the frozen
    preimages ``z'_i = g^dagger(x_i)`` and never changes ``g``, so a different latent flow (another
    ``latent_flow``, ``n_latent_steps`` or ``latent_hidden``) can be fitted on a ``g`` that is
    already trained: adopt it, then train with ``mse_steps=0``. The two priors must agree on every
    key of :data:`INJECTIVE_KEYS`; the latent flow and the base of ``prior`` keep their own values.

    Example:
        >>> import tempfile, torch
        >>> from invprob.priors import TRUMPET
        >>> data = torch.rand(16, 1, 8, 8) * 2 - 1
        >>> trained = TRUMPET((1, 8, 8), 4, n_scales=2, hidden=4, unet_depth=1, latent_flow="linear")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = train_trumpet(trained, data, tmp, mse_steps=2, ml_steps=0, batch_size=8, progress=False)
        >>> prior = adopt_injective(TRUMPET((1, 8, 8), 4, n_scales=2, hidden=4, unet_depth=1, n_latent_steps=2), trained)
        >>> x = torch.rand(2, 1, 8, 8) * 2 - 1
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     report = train_trumpet(prior, data, tmp, mse_steps=0, ml_steps=2, batch_size=8, progress=False)
        >>> report["finished"], torch.equal(prior.project(x), trained.project(x))
        (True, True)
    """
    for name, value in (("prior", prior), ("source", source)):
        if not isinstance(value, TRUMPET):
            raise TypeError(f"{name}: expected a TRUMPET, got {type(value).__name__}")
    mine, theirs = prior.config(), source.config()
    differ = [key for key in INJECTIVE_KEYS if mine[key] != theirs[key]]
    if differ:
        listed = ", ".join(f"{key} {theirs[key]!r} (prior: {mine[key]!r})" for key in differ)
        raise ValueError(f"source: expected an injective part like the prior's, got {listed}")
    if not layers_initialized(source.injective):
        raise ValueError("source: expected a trained injective part, got one whose actnorms are not initialised")
    prior.injective.load_state_dict(source.injective.state_dict())
    return prior


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
    opts, val = prepare(prior, Prior, FlowTrainOptions, options, dataset, val_dataset, "train_flow")

    def loss_fn(model: Prior, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        batch = dequantise(batch.to(model.device, model.dtype), opts.delta, generator)
        nll = -model.log_prob(batch).mean() / model.data_dim
        return nll, {"bits_per_dim": float(nats_to_bpd(nll.detach(), opts.bpd_levels, opts.data_range))}

    validate = bits_per_dim_validator(val, opts)
    return run_phases(
        prior, dataset, out_dir, [Phase("ml", loss_fn, opts.steps, opts.lr, validate)], trainer="train_flow", opts=opts,
        resume=resume, stop_after=stop_after, command=command, final_metrics=validate,
    )


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
        return {"rel_error": mean_relative_error(val, model.project(val))}

    return validate


def _latent_nll(val: torch.Tensor) -> Validator:
    def validate(model: TRUMPET) -> dict[str, float]:
        z_prime = model.g_pinv(val)[0]
        return {"latent_nll": float(-model.latent_flow_log_prob(z_prime).mean() / model.latent_dim)}

    return validate
