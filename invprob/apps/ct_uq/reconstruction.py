"""Measuring a phantom and reconstructing it: FBP, the MAP estimate and posterior samples."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import uq
from ..._checks import check_float, to_tensor
from ...operators.ct import LimitedAngleCT
from ...operators.noise import add_noise
from ...priors.base import Prior
from ...solvers import solve
from .settings import DATA_RANGE, MAP_METHOD, MAP_OPTIONS, MAP_START_TV, default_sampler_options


@dataclass
class Reconstruction:
    """One measurement and what the workflow computes from it.

    ``truth`` ``(C, N, N)`` or None; ``y`` the sinogram; ``sigma`` the noise std; ``fbp`` and
    ``map`` ``(C, N, N)`` (``map`` None when not computed); ``samples`` ``(S, C, N, N)``;
    ``range_mean`` the mean of the samples on the prior's range before an off-range residual was
    added (:func:`with_residual`; None without one).
    """

    truth: torch.Tensor | None
    y: torch.Tensor
    sigma: float
    fbp: torch.Tensor
    map: torch.Tensor | None
    samples: torch.Tensor
    seconds_map: float
    seconds_sampler: float
    range_mean: torch.Tensor | None = None

    @property
    def mean(self) -> torch.Tensor:
        return uq.posterior_mean(self.samples)

    @property
    def std(self) -> torch.Tensor:
        return uq.posterior_std(self.samples)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fields as NumPy arrays (absent ones left out), for a stage file."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], device: torch.device, dtype: torch.dtype) -> Reconstruction:
        """Inverse of :meth:`to_arrays`."""
        def tensor(name: str) -> torch.Tensor | None:
            return torch.from_numpy(arrays[name]).to(device=device, dtype=dtype) if name in arrays else None

        return cls(tensor("truth"), tensor("y"), float(arrays["sigma"]), tensor("fbp"), tensor("map"),
                   tensor("samples"), float(arrays["seconds_map"]), float(arrays["seconds_sampler"]),
                   tensor("range_mean"))


def measure(
    op: LimitedAngleCT, truth: torch.Tensor, snr_db: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, float]:
    """``y = A x + sigma * noise`` with ``sigma = RMS(A x) 10^(-snr_db / 20)``; returns ``(y, sigma)``."""
    with torch.no_grad():
        y, sigma = add_noise(op(truth.unsqueeze(0)), snr_db=snr_db, generator=generator)
    return y[0], float(sigma[0])


def reconstruct(
    op: LimitedAngleCT,
    prior: Prior,
    y: torch.Tensor,
    sigma: float,
    *,
    truth: torch.Tensor | None = None,
    sampler: str = "svi",
    n_samples: int = 64,
    map_options: dict[str, Any] | None = None,
    sampler_options: dict[str, Any] | None = None,
    with_map: bool = True,
    model_error: float | None = None,
    residual: uq.GaussianResidual | None = None,
    generator: torch.Generator | None = None,
) -> Reconstruction:
    """FBP, the MAP estimate (unless ``with_map`` is False) and posterior samples of one sinogram ``y``.

    The MAP is iFlow-L's (:data:`~invprob.apps.ct_uq.settings.MAP_OPTIONS`, with the known
    ``sigma``) from the projection of a TV reconstruction (:func:`map_start`); ``map_options``
    override those options (``"start"`` selects iFlow-L's own start, ``"start_tv"`` the TV weight). With ``model_error`` ``tau`` (:func:`model_error_sigma`), MAP and sampler
    use the noise std ``sqrt(sigma^2 + tau^2)``; the returned ``sigma`` stays the measurement's.
    SVI starts at the prior's encoding of the MAP (``start="x_init"``, the workflow's default; the
    MAP is computed for it even when ``with_map`` is False, and its time is then the sampler's).
    With ``residual`` (:class:`invprob.uq.GaussianResidual`), each posterior sample ``v`` becomes
    ``v + r``, ``r`` drawn from the off-range residual's posterior given ``v`` and ``y``, and the
    MAP ``v_hat`` becomes ``v_hat + E[r | v_hat, y]``; the time this takes is counted in the
    sampler's and the MAP's seconds.

    References:
        Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for Inference and
        Inverse Problems" (UAI), sec. 3.2 (the latent posterior and its flow).
    """
    batch = y.unsqueeze(0)
    with torch.no_grad():
        fbp = op.fbp(batch)[0]
    x_map, seconds_map = None, 0.0
    noise = effective_sigma(sigma, model_error)
    options = default_sampler_options(sampler, noise, n_samples, sampler_options)
    warm = options.get("start") == "x_init"
    if with_map or warm:
        x_map, seconds_map = map_estimate(op, prior, batch, noise, map_options, generator)
    result = solve(op, prior, batch, sampler, generator=generator, x_init=x_map[None] if warm else None, **options)
    samples = result.samples[0].detach()[:n_samples]
    seconds_sampler = result.seconds
    if not with_map:  # the MAP only started the sampler: its time is the sampler's
        x_map, seconds_map, seconds_sampler = None, 0.0, seconds_sampler + seconds_map
    rec = Reconstruction(truth, y, sigma, fbp, x_map, samples, seconds_map, seconds_sampler)
    return rec if residual is None else with_residual(op, residual, rec, generator)


def map_start(op: LimitedAngleCT, prior: Prior, y: torch.Tensor, sigma: float, beta: float = MAP_START_TV) -> torch.Tensor:
    """``P(clip(x_TV))`` for sinograms ``y`` ``(B, *op.out_shape)``: the prior's projection of the TV
    reconstruction with weight ``beta sigma^2`` (:data:`~invprob.apps.ct_uq.settings.MAP_START_TV`),
    both clipped to the data range ``[-1, 1]``.

    Example:
        >>> from invprob.priors.pretrained import load_prior
        >>> prior = load_prior("trumpet-ellipses")
        >>> op = LimitedAngleCT(tuple(prior.data_shape))
        >>> x0 = map_start(op, prior, op(prior.mean_image()), sigma=1.0)
        >>> tuple(x0.shape)
        (1, 1, 64, 64)
    """
    beta = check_float(beta, "start_tv", minimum=0)
    half = DATA_RANGE / 2
    x_tv = solve(op, None, y, "tv", lam=beta * sigma**2).x_hat.detach().clamp(-half, half)
    with torch.no_grad():
        return prior.project(x_tv).clamp(-half, half)


def map_estimate(op: LimitedAngleCT, prior: Prior, y: torch.Tensor, sigma: float, map_options: dict[str, Any] | None,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, float]:
    """The workflow's MAP of one sinogram ``y`` ``(1, *op.out_shape)`` and its seconds, start included."""
    start = time.perf_counter()
    options = {"sigma": sigma, **MAP_OPTIONS, **(map_options or {})}
    beta = options.pop("start_tv", MAP_START_TV)
    x_init = None if "start" in options else map_start(op, prior, y, sigma, beta)
    result = solve(op, prior, y, MAP_METHOD, generator=generator, x_init=x_init, **options)
    return result.x_hat[0].detach(), time.perf_counter() - start


def with_residual(op: LimitedAngleCT, residual: uq.GaussianResidual, rec: Reconstruction,
                  generator: torch.Generator | None = None) -> Reconstruction:
    """``rec`` with the off-range residual: samples ``v + r`` (``r`` drawn given ``v`` and ``rec.y``), MAP
    ``v_hat + E[r | v_hat, y]`` (:class:`invprob.uq.GaussianResidual`); the time is added to the sampler's and
    the MAP's seconds, and the range samples' mean is kept as ``range_mean``."""
    if rec.range_mean is not None:
        raise ValueError("rec: the off-range residual was added to these samples already")
    start = time.perf_counter()
    x_map = None if rec.map is None else residual.condition_mean(op, rec.map[None], rec.y, rec.sigma)[0]
    seconds_map = rec.seconds_map + time.perf_counter() - start
    start = time.perf_counter()
    samples = residual.condition_samples(op, rec.samples, rec.y, rec.sigma, generator=generator)
    return replace(rec, map=x_map, samples=samples, seconds_map=seconds_map,
                   seconds_sampler=rec.seconds_sampler + time.perf_counter() - start, range_mean=rec.mean)


def model_error_sigma(op: LimitedAngleCT, prior: Prior, images: torch.Tensor) -> float:
    """Std ``tau`` of the prior's model error in the measurements: ``tau^2 = mean_i ||A (x_i - P(x_i))||^2 / m``.

    ``images`` ``(K, C, N, N)`` are training images, ``P`` the prior's projection onto its range and
    ``m`` the number of measurements. A prior supported on a manifold cannot represent
    ``x - P(x)``; treating ``A (x - P(x))`` as extra white noise, the likelihood becomes
    ``N(y; A v, (sigma^2 + tau^2) I)`` (:func:`effective_sigma`) — the noise model of the noisy
    injective flows of Cunningham et al. 2020 ("Normalizing Flows Across Dimensions"), estimated
    here from training reconstructions instead of learnt.
    """
    with torch.no_grad():
        x = images.to(device=prior.device, dtype=prior.dtype)
        residual = op(x - prior.project(x))
    return float(residual.double().pow(2).flatten(1).sum(1).mean().div(residual[0].numel()).sqrt())


def effective_sigma(sigma: float, model_error: float | None) -> float:
    """``sqrt(sigma^2 + tau^2)``: the noise std of a likelihood that includes the model error ``tau`` (None: 0)."""
    tau = 0.0 if model_error is None else check_float(model_error, "model_error", minimum=0)
    return float((sigma**2 + tau**2) ** 0.5)


def ct_shape(prior: Prior) -> tuple[int, int, int]:
    """The prior's ``data_shape`` if it is square images ``(C, N, N)``."""
    shape = tuple(prior.data_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"prior: limited-angle CT needs a prior of square images (C, N, N), got data_shape {shape}")
    return shape  # type: ignore[return-value]


def load_ct_prior(prior: str | Path | Prior, device: str | torch.device) -> Prior:
    """A prior given by instance, shipped name or checkpoint directory."""
    if isinstance(prior, Prior):
        return prior
    from ...priors.pretrained import load_prior

    return load_prior(prior, device=device)


def load_measurement(
    measurement: str | Path | torch.Tensor | np.ndarray, sigma: float | None, op: LimitedAngleCT, prior: Prior
) -> tuple[torch.Tensor, float]:
    """A measured sinogram of the operator's output shape and its noise std."""
    if sigma is None:
        raise ValueError("sigma: a given measurement needs its noise std sigma > 0, got None")
    sigma = check_float(sigma, "sigma", minimum=0, strict=True)
    if isinstance(measurement, (str, Path)):
        measurement = np.load(measurement)
    y = to_tensor(measurement, "measurement").to(device=prior.device, dtype=prior.dtype)
    if tuple(y.shape) != tuple(op.out_shape):
        raise ValueError(
            f"measurement: expected a sinogram of shape {tuple(op.out_shape)} (C, n_angles, N), got {tuple(y.shape)}"
        )
    return y, sigma
