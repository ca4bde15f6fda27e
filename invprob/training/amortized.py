"""Training the amortised posterior ``q(z | y)`` of amortised VI (:class:`~invprob.solvers.AmortizedPosterior`).

:func:`train_amortized` fits, once for an operator and a noise level, a flow conditioned on the
measurement by minimising the variational loss averaged over simulated measurements,

    E_{x, y = A x + sigma n} E_{q(z | y)}[ beta * log q(z | y) - log p_Z(z) + ||A f(z) - y||^2 / (2 sigma^2) ],

an estimate of ``E_y KL(q(. | y) || p(. | y))`` up to a constant when ``beta = 1``. The images
``x`` are drawn from the prior or taken from ``data``. It runs through the same loop as the prior
trainers (:func:`invprob.training.fit`): seeded and resumable with ``out_dir``, and data-parallel
under ``torchrun`` (each rank simulates its share of every batch). Sampling the posterior of a new
``y`` is then one forward pass: ``solve(op, prior, y, "avi", amortized=model)``.

References:
    Whang, Lei, Dimakis (2021), "Composing Normalizing Flows for Inverse Problems" (eq. 2, sec. 6.4).

Example:
    >>> import torch
    >>> from invprob.operators import Identity
    >>> from invprob.priors import LinearGaussianPrior
    >>> prior = LinearGaussianPrior(torch.eye(4), data_shape=(1, 2, 2))
    >>> model = train_amortized(Identity((1, 2, 2)), prior, sigma=0.5, steps=3, batch_size=4,
    ...                         n_calibration=8, n_layers=1, hidden=8, generator=torch.Generator().manual_seed(0))
    >>> len(model.history["loss"]), model.sigma
    (3, 0.5)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field, field_validator

from .._checks import check_batch, check_finite, to_tensor
from ..operators.base import Operator
from ..priors.base import Prior
from ..rng import randn
from ..solvers._posterior import check_run, data_fit, require_latent_density
from ..solvers.base import parse_options
from ..solvers.variational.amortized import AmortizedPosterior
from ..solvers.variational.fitting import FlowOptions
from . import distributed
from .loop import fit


class AmortizedTrainingOptions(FlowOptions):
    """Options of :func:`train_amortized` (defaults suit small latent spaces); ``sigma`` is one number."""

    steps: int = Field(2000, ge=1, le=10_000_000, description="optimisation steps")
    batch_size: int = Field(64, ge=1, description="simulated measurements per step (global, split over the ranks)")
    context_dim: int = Field(32, ge=1, description="size of the measurement embedding fed to the flow")
    n_calibration: int = Field(1024, ge=2, description="simulated measurements used to standardise y")
    seed: int = Field(0, ge=0, description="seed of the data order and of each step's draws")
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints (with out_dir)")

    @field_validator("sigma", mode="after")
    @classmethod
    def _one_sigma(cls, value: Any) -> Any:
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError(f"expected one noise level for the training, got {len(value)}")
            return value[0]
        return value


class _Draws(torch.utils.data.Dataset):
    """``n`` placeholder items: with no ``data``, each step's images are drawn from the prior."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.zeros(1)


def train_amortized(
    op: Operator,
    prior: Prior,
    *,
    data: torch.Tensor | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    generator: torch.Generator | None = None,
    callback: Callable[[int, torch.Tensor, dict[str, float]], Any] | None = None,
    **options: Any,
) -> AmortizedPosterior:
    """Train a conditional pre-generator ``q(z | y)`` for ``op`` (see the module docstring).

    Each step takes images ``x`` (drawn from ``prior.sample``, or a batch of the seeded order of the
    rows of ``data``, shape ``(N, *prior.data_shape)``), simulates ``y = A x + sigma * noise``, draws
    one ``z ~ q(. | y)`` per measurement and takes an Adam step on the mean of
    ``beta * log q(z | y) - log p_Z(z) + ||A f(z) - y||^2 / (2 sigma^2)``; the prior is frozen.
    The draws of step ``s`` come from a generator seeded by ``seed`` and ``s``; ``generator`` seeds
    the model's initialisation and the calibration of ``y``. With ``out_dir`` the training state is
    checkpointed there (``resume=True`` continues it) and rank 0 writes the trained model to
    ``out_dir`` (:meth:`AmortizedPosterior.load` reads it back).

    ``options`` are those of :class:`AmortizedTrainingOptions` (``sigma`` is required). The
    returned model's ``history`` holds the loss per step. ``callback(step, x, info)`` gets the
    step's decoded samples and its loss values; returning True stops the training.
    """
    opts = parse_options(AmortizedTrainingOptions, options, "train_amortized")
    if not isinstance(op, Operator) or not isinstance(prior, Prior):
        raise TypeError("train_amortized: expected an invprob Operator and an invprob Prior")
    if tuple(op.in_shape) != tuple(prior.data_shape):
        raise ValueError(f"op: in_shape {op.in_shape} does not match the prior's data_shape {prior.data_shape}")
    check_run(torch.zeros(1), generator, callback)
    require_latent_density(prior, "avi")
    world = distributed.setup()
    if world.size > 1:
        prior.to(world.device)
    images = None if data is None else _check_data(data, prior)
    sigma = float(opts.sigma)  # type: ignore[arg-type]
    model = AmortizedPosterior(
        latent_dim=prior.latent_dim, in_shape=op.in_shape, out_shape=op.out_shape, sigma=sigma, beta=opts.beta,
        prior_class=type(prior).__name__, n_layers=opts.n_layers, hidden=opts.hidden, context_dim=opts.context_dim,
        generator=generator,
    ).to(device=prior.device, dtype=prior.dtype)
    with torch.no_grad():
        x0 = prior.sample(opts.n_calibration, generator=generator) if images is None else images
        model.calibrate(_measure(op, x0[: opts.n_calibration], sigma, generator))
    last: dict[str, torch.Tensor] = {}

    def loss_fn(model: AmortizedPosterior, batch: torch.Tensor, step_generator: torch.Generator):
        with torch.no_grad():
            x = prior.sample(batch.shape[0], generator=step_generator) if images is None else batch.to(prior.device, prior.dtype)
            y = _measure(op, x, sigma, step_generator)
        z, log_q = model.flow.sample(y.shape[0], model.context(y), step_generator)
        decoded = prior.decode(z)
        fit_term = data_fit(op, decoded, y, sigma)
        last["x"] = decoded.detach()
        loss = (opts.beta * log_q - prior.latent_log_prob(z) + fit_term).mean()
        return loss, {"data_fit": float(fit_term.detach().mean())}

    def step_callback(step: int, values: dict[str, float]) -> Any:
        return callback(step, last["x"], values) if callback is not None else None

    frozen = [p for p in prior.parameters() if p.requires_grad]
    for p in frozen:  # gradients flow through the prior to z, never into its weights
        p.requires_grad_(False)
    try:
        dataset = _Draws(opts.batch_size) if images is None else images
        history = fit(
            model, loss_fn, dataset, out_dir, resume=resume, callback=step_callback if callback else None,
            steps=opts.steps, lr=opts.lr, lr_schedule=opts.lr_schedule, batch_size=opts.batch_size, seed=opts.seed,
            clip_grad=None, checkpoint_every=opts.checkpoint_every, validate_every=opts.steps,
            progress=bool(opts.progress), phase="avi",
        )
    finally:
        for p in frozen:
            p.requires_grad_(True)
    model.history = history
    model.eval()
    if out_dir is not None and world.is_main:
        model.save(out_dir)
    world.barrier()
    return model


def _check_data(data: torch.Tensor, prior: Prior) -> torch.Tensor:
    images = check_finite(check_batch(to_tensor(data, "data"), prior.data_shape, "data"), "data")
    if images.shape[0] == 0:
        raise ValueError(f"data: expected at least one image, got an empty batch of shape {tuple(images.shape)}")
    return images.to(device=prior.device, dtype=prior.dtype)


def _measure(op: Operator, x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """``y = A x + sigma * noise``."""
    y = op(x)
    return y + sigma * randn(y.shape, like=y, generator=generator)
