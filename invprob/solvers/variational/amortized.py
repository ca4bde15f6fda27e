"""Amortised variational inference: a conditional pre-generator ``q(z | y)`` and the ``"avi"`` sampler.

:func:`invprob.training.train_amortized` fits, once for an operator and a noise level, a flow
conditioned on the measurement by minimising the variational loss averaged over measurements
simulated from the prior (or from images given by the user),

    E_{x, y = A x + sigma n} E_{q(z | y)}[ beta * log q(z | y) - log p_Z(z) + ||A f(z) - y||^2 / (2 sigma^2) ],

an estimate of ``E_y KL(q(. | y) || p(. | y))`` up to a constant when ``beta = 1``. Sampling the
posterior of a new ``y`` is then one forward pass (``solve(op, prior, y, "avi", amortized=model)``).
:class:`AmortizedPosterior` is the model; it is saved as one safetensors + JSON checkpoint
(format ``"invprob.AmortizedPosterior"``).

References: Whang, Lei, Dimakis 2021, "Composing Normalizing Flows for Inverse Problems"
(eq. 2, sec. 6.4).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from pydantic import Field, field_validator

from ...checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ...operators.base import Operator
from ...priors.base import Prior
from .._common import NoiseLevel
from .._posterior import check_run, data_fit, noise_levels, progress_option, summarize, validate_noise_level
from ..base import Callback, Result, Solver, SolverOptions, register
from ..driver import iterate
from ..pregenerator import PreGenerator

FORMAT = "invprob.AmortizedPosterior"


class AmortizedPosterior(torch.nn.Module):
    """A conditional pre-generator ``q(z | y)`` for one operator shape, noise level and latent size.

    Built by :func:`invprob.training.train_amortized`; used by ``solve(op, prior, y, method="avi", amortized=...)``.
    The measurement is standardised entry-wise (statistics of simulated training measurements)
    before the flow's embedding network reads it. :meth:`save` / :meth:`load` use safetensors + JSON.

    Example:
        >>> import torch
        >>> model = AmortizedPosterior(latent_dim=2, in_shape=(1, 2, 2), out_shape=(3,), sigma=0.1,
        ...                            beta=1.0, prior_class="LinearGaussianPrior", n_layers=1, hidden=8)
        >>> z, log_q = model.sample_latent(torch.zeros(4, 3), 5, torch.Generator().manual_seed(0))
        >>> tuple(z.shape), tuple(log_q.shape)
        ((4, 5, 2), (4, 5))
    """

    def __init__(
        self,
        *,
        latent_dim: int,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        sigma: float,
        beta: float,
        prior_class: str,
        n_layers: int = 4,
        hidden: int = 64,
        context_dim: int = 32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.sigma, self.beta, self.prior_class = float(sigma), float(beta), prior_class
        m = math.prod(self.out_shape)
        self.flow = PreGenerator(
            latent_dim, n_layers=n_layers, hidden=hidden, context_in=m, context_dim=context_dim, generator=generator
        )
        self.register_buffer("y_shift", torch.zeros(m))
        self.register_buffer("y_scale", torch.ones(m))
        self.history: dict[str, list[float]] = {}

    @property
    def latent_dim(self) -> int:
        return self.flow.dim

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-serialisable)."""
        flow = self.flow.config()
        return {
            "latent_dim": flow["dim"],
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
            "sigma": self.sigma,
            "beta": self.beta,
            "prior_class": self.prior_class,
            "n_layers": flow["n_layers"],
            "hidden": flow["hidden"],
            "context_dim": flow["context_dim"],
        }

    def context(self, y: torch.Tensor) -> torch.Tensor:
        """Standardised flattened measurements, shape ``(B, m)``."""
        return (y.flatten(1) - self.y_shift) / self.y_scale

    def calibrate(self, y: torch.Tensor) -> None:
        """Set the standardisation from a batch of simulated measurements ``(N, *out_shape)``."""
        flat = y.detach().flatten(1)
        self.y_shift.copy_(flat.mean(0))
        self.y_scale.copy_(flat.std(0).clamp_min(1e-6 * float(flat.std().clamp_min(1e-12))))

    def sample_latent(
        self, y: torch.Tensor, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` latents per measurement: ``z`` of shape ``(B, n, d)`` and ``log q(z | y)`` ``(B, n)``."""
        context = self.context(y).repeat_interleave(n, dim=0)
        z, log_q = self.flow.sample(context.shape[0], context, generator)
        return z.reshape(y.shape[0], n, -1), log_q.reshape(y.shape[0], n)

    def check_compatible(self, op: Operator, prior: Prior) -> None:
        """Raise ``ValueError`` if ``op`` or ``prior`` differ in shape from those used in training."""
        if tuple(op.in_shape) != self.in_shape or tuple(op.out_shape) != self.out_shape:
            raise ValueError(
                f"amortized: trained for an operator {self.in_shape} -> {self.out_shape}, "
                f"got {tuple(op.in_shape)} -> {tuple(op.out_shape)}; train a new one with train_amortized"
            )
        if prior.latent_dim != self.latent_dim:
            raise ValueError(
                f"amortized: trained for a prior with latent_dim {self.latent_dim}, got {prior.latent_dim}"
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write weights (safetensors) and configuration (JSON) to the directory ``path``."""
        config = {"format": FORMAT, "config": self.config(), "history": self.history}
        save_checkpoint(path, dict(self.state_dict()), config)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> AmortizedPosterior:
        """Read a directory written by :meth:`save`; raise :class:`CheckpointError` if it is not one."""
        tensors, record = load_checkpoint(path)
        if record.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path}: not an amortized posterior (format {record.get('format')!r})")
        try:
            model = cls(**record["config"])
            model.load_state_dict(tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint {path}: weights do not match the configuration ({err})") from None
        model.history = record.get("history", {})
        return model.to(map_location)


class AVIOptions(SolverOptions):
    """Options of ``"avi"``: the trained model, the number of samples and (optionally) the noise level."""

    amortized: AmortizedPosterior = Field(description="a model from train_amortized or AmortizedPosterior.load")
    n_samples: int = Field(64, ge=1, description="posterior samples returned per measurement")
    sigma: NoiseLevel = Field(
        None, description="optional: must equal the noise level the model was trained for (amortized.sigma)"
    )
    progress: bool | None = progress_option()

    @field_validator("sigma", mode="before")
    @classmethod
    def _sigma(cls, value: Any) -> Any:
        return None if value is None else validate_noise_level(value)


@register
class AVI(Solver):
    """Amortised VI: one forward pass of a trained conditional pre-generator per batch of samples.

    The noise level is the one the model was trained with (``amortized.sigma``); a ``sigma`` given
    here must equal it. ``x_init`` is not used. The run is one iteration of
    :func:`invprob.solvers.iterate` whose ``loss`` is the Monte Carlo estimate of the variational
    loss ``E_q[beta log q(z | y) - log p_Z(z) + ||A f(z) - y||^2 / (2 sigma^2)]`` per measurement
    (how well the amortised posterior fits this ``y``).
    """

    name = "avi"
    kind = "posterior"
    Options = AVIOptions
    description = "amortised composed-flow VI: one forward pass of a model from train_amortized"
    references = 'Whang, Lei, Dimakis 2021, "Composing Normalizing Flows for Inverse Problems" (sec. 6.4)'

    def run(
        self,
        op: Operator,
        prior: Prior | None,
        y: torch.Tensor,
        *,
        x_init: torch.Tensor | None,
        callback: Callback | None,
        generator: torch.Generator | None,
    ) -> Result:
        opts: AVIOptions = self.options
        batch = check_run(y, generator, callback)
        model = opts.amortized
        model.check_compatible(op, prior)
        if opts.sigma is not None:
            given = noise_levels(opts.sigma, y)
            if not bool(torch.allclose(given, torch.full_like(given, model.sigma), rtol=1e-5, atol=0.0)):
                raise ValueError(
                    f"sigma: the amortized posterior was trained for sigma={model.sigma:g}, got {opts.sigma!r}; "
                    "train one for this noise level with train_amortized"
                )
        out: dict[str, torch.Tensor] = {}

        def step(it: int, active: torch.Tensor) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                z, log_q = model.sample_latent(y, opts.n_samples, generator)
                flat = z.flatten(0, 1)
                x = prior.decode(flat)
                fit = data_fit(op, x, y.repeat_interleave(opts.n_samples, dim=0), model.sigma)
                loss = model.beta * log_q.flatten() - prior.latent_log_prob(flat) + fit
            out["samples"] = x.reshape(batch, opts.n_samples, *prior.data_shape)
            return {"loss": loss.view(batch, -1).mean(1), "data_fit": fit.view(batch, -1).mean(1)}

        trace = iterate(
            self.name, 1, step, batch=batch, estimate=lambda: out["samples"].mean(1), callback=callback,
            progress=opts.progress,
        )
        samples = out["samples"]
        mean, std = summarize(samples)
        return Result(
            x_hat=mean, method=self.name, options=opts, history=trace.history,
            samples=samples, mean=mean, std=std, extras={"amortized": model},
        )
