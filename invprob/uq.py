"""Uncertainty summaries of posterior samples.

Every function takes ``samples`` with the sample axis at ``dim`` (0 by default; use ``dim=1`` on
a batched ``Result.samples`` of shape ``(B, S, *shape)``) and reduces over that axis.

- :func:`posterior_mean`, :func:`posterior_std`;
- :func:`mean_absolute_deviation`: ``E |X - <X>|^p`` pixel-wise, ``p = 1, 2`` (paper 000 sec. 4.3);
- :func:`credible_interval`: pixel-wise central interval from the empirical quantiles;
- :func:`snr`, :func:`sample_snr`, :func:`mmse_snr`: reconstruction SNR in dB, for each sample and
  for the posterior mean (the MMSE estimate, paper 003 sec. 4 and 6.2);
- :func:`diversity`: mean pairwise Euclidean distance between samples;
- :func:`effective_sample_size`: ESS of MCMC chains (multi-chain autocorrelation with Geyer's
  initial monotone sequence);
- :class:`RunningMoments`: Welford running mean and variance for streams of samples;
- Fourier-domain uncertainty (paper 000 sec. 4.3, fig. 3): :func:`fourier_deviation` (the
  spectrum of the mean absolute deviation taken over the samples' Fourier transforms),
  :func:`frequency_polar`, :func:`missing_wedges`, :func:`wedge_mask` and
  :func:`wedge_energy_ratio` (the cone of uncertainty along the missing CT angles, as a number);
- calibration: :func:`coverage` of pixel-wise central credible intervals against the truth (the
  points of a reliability diagram) and :func:`min_samples_for_level`.

The limited-angle CT workflow built on these is :func:`invprob.apps.ct_uq.ct_workflow`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._checks import check_finite, check_int


def _check_samples(samples: torch.Tensor, dim: int, minimum: int = 1) -> int:
    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point():
        raise TypeError(f"samples: expected a floating-point tensor, got {type(samples).__name__}")
    check_int(dim, "dim")
    if not -samples.dim() <= dim < samples.dim():
        raise ValueError(f"dim: {dim} is out of range for samples of shape {tuple(samples.shape)}")
    check_finite(samples, "samples")
    n = samples.shape[dim]
    if n < minimum:
        raise ValueError(f"samples: expected at least {minimum} sample(s) along dim {dim}, got {n}")
    return dim % samples.dim()


def posterior_mean(samples: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Monte Carlo posterior mean ``<X> = (1/S) sum_s x_s`` (the MMSE estimate)."""
    dim = _check_samples(samples, dim)
    return samples.mean(dim)


def posterior_std(samples: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Pixel-wise standard deviation with the unbiased ``1/(S-1)`` variance (needs ``S >= 2``)."""
    dim = _check_samples(samples, dim, minimum=2)
    return samples.std(dim)


def mean_absolute_deviation(samples: torch.Tensor, p: float = 1.0, dim: int = 0) -> torch.Tensor:
    """Pixel-wise ``E |X - <X>|^p``, ``<X>`` the sample mean (paper 000 sec. 4.3); ``p = 2``: the ``1/S`` variance."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not p > 0 or not math.isfinite(p):
        raise ValueError(f"p: expected a finite number > 0, got {p!r}")
    dim = _check_samples(samples, dim)
    return (samples - samples.mean(dim, keepdim=True)).abs().pow(p).mean(dim)


def credible_interval(samples: torch.Tensor, level: float = 0.9, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-wise central credible interval: the ``(1 - level)/2`` and ``(1 + level)/2`` empirical quantiles."""
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    dim = _check_samples(samples, dim)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=samples.dtype, device=samples.device)
    lo, hi = torch.quantile(samples, q, dim=dim)
    return lo, hi


def snr(x_hat: torch.Tensor, x_true: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """``20 log10(||x|| / ||x - x_hat||)`` in dB, the norms over every axis after the first ``batch_dims``."""
    if x_hat.shape != x_true.shape:
        raise ValueError(f"x_hat: shape {tuple(x_hat.shape)} does not match x_true {tuple(x_true.shape)}")
    check_int(batch_dims, "batch_dims", minimum=0)
    if batch_dims >= x_true.dim():
        raise ValueError(f"batch_dims: expected fewer than {x_true.dim()} batch axes, got {batch_dims}")
    error = (x_true - x_hat).flatten(batch_dims).norm(dim=-1)
    return 20 * torch.log10(x_true.flatten(batch_dims).norm(dim=-1) / error)


def sample_snr(samples: torch.Tensor, x_true: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """SNR (dB) of every sample against ``x_true`` (shaped as ``samples`` without the sample axis).

    Returns shape ``samples.shape[:dim + 1]``.
    """
    dim = _check_samples(samples, dim)
    _check_truth(samples, x_true, dim)
    return snr(samples, x_true.unsqueeze(dim).expand_as(samples), batch_dims=dim + 1)


def mmse_snr(samples: torch.Tensor, x_true: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """SNR (dB) of the posterior mean (the MMSE estimate) against ``x_true``; shape ``samples.shape[:dim]``."""
    dim = _check_samples(samples, dim)
    _check_truth(samples, x_true, dim)
    return snr(samples.mean(dim), x_true, batch_dims=dim)


def diversity(samples: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Mean Euclidean distance over all pairs of distinct samples; shape ``samples.shape[:dim]`` (needs ``S >= 2``)."""
    dim = _check_samples(samples, dim, minimum=2)
    flat = samples.flatten(dim + 1)
    n = flat.shape[dim]
    distances = torch.cdist(flat, flat)
    return distances.sum((-1, -2)) / (n * (n - 1))


def effective_sample_size(chains: torch.Tensor) -> torch.Tensor:
    """Effective sample size of each coordinate of ``chains`` ``(C, S, *shape)`` (C chains of S draws).

    With ``W`` the mean within-chain variance, ``var+ = (S-1)/S W + B/S`` (``B/S`` the variance of
    the chain means) and ``gamma_t`` the within-chain autocovariance at lag ``t`` averaged over
    chains, the combined autocorrelation is ``rho_t = 1 - (W - gamma_t) / var+``. The sum
    ``tau = -1 + 2 sum_k P_k`` of the pair sums ``P_k = rho_{2k} + rho_{2k+1}`` is truncated at the
    first non-positive ``P_k`` and made monotone (Geyer's initial monotone sequence); ``ESS = C S / tau``,
    with ``tau`` floored at ``1 / log10(C S + 10)`` (antithetic chains cannot claim unbounded ESS).
    Returns shape ``(*shape)``; a coordinate constant over every chain gets ``C S``.
    """
    if not isinstance(chains, torch.Tensor) or chains.dim() < 2 or not chains.is_floating_point():
        raise ValueError("chains: expected a floating-point tensor of shape (C, S, ...)")
    check_finite(chains, "chains")
    n_chains, n_draws = chains.shape[:2]
    if n_draws < 4:
        raise ValueError(f"chains: expected at least 4 draws per chain, got {n_draws}")
    x = chains.double().flatten(2)
    acov = _autocovariance(x)  # (C, S, D)
    chain_var = acov[:, 0] * n_draws / (n_draws - 1)
    within = chain_var.mean(0)
    between = x.mean(1).var(0) if n_chains > 1 else torch.zeros_like(within)
    var_plus = within * (n_draws - 1) / n_draws + between
    safe = var_plus > 0
    rho = 1 - (within - acov.mean(0)) / torch.where(safe, var_plus, torch.ones_like(var_plus))
    rho[0] = 1.0
    pairs = rho[: 2 * (n_draws // 2)].reshape(n_draws // 2, 2, -1).sum(1)
    positive = torch.cumprod((pairs > 0).to(pairs.dtype), dim=0)
    monotone = torch.cummin(torch.where(positive > 0, pairs, torch.zeros_like(pairs)), dim=0).values
    tau = (-1 + 2 * monotone.sum(0)).clamp_min(1.0 / math.log10(n_chains * n_draws + 10))
    ess = torch.where(safe, n_chains * n_draws / tau, torch.full_like(tau, float(n_chains * n_draws)))
    return ess.reshape(chains.shape[2:]).to(chains.dtype)


def _autocovariance(x: torch.Tensor) -> torch.Tensor:
    """Biased autocovariance ``(1/S) sum_t (x_t - m)(x_{t+k} - m)`` along axis 1 for every lag, by FFT."""
    n = x.shape[1]
    centred = x - x.mean(1, keepdim=True)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = torch.fft.rfft(centred, n=size, dim=1)
    return torch.fft.irfft(spectrum * spectrum.conj(), n=size, dim=1)[:, :n] / n


class RunningMoments:
    """Running mean and variance of a stream of sample batches (Welford's update, Chan's merge).

    ``update(x, dim)`` adds the samples of ``x`` along ``dim``; ``mean``, ``variance`` (unbiased)
    and ``std`` have the shape of ``x`` without that axis; ``count`` is the number of samples seen.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor, dim: int = 0) -> None:
        n = x.shape[dim]
        batch_mean = x.mean(dim)
        batch_m2 = (x - batch_mean.unsqueeze(dim)).pow(2).sum(dim)
        if self.mean is None or self._m2 is None:
            self.count, self.mean, self._m2 = n, batch_mean, batch_m2
            return
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self._m2 = self._m2 + batch_m2 + delta.pow(2) * (self.count * n / total)
        self.count = total

    @property
    def variance(self) -> torch.Tensor:
        if self._m2 is None:
            raise ValueError("RunningMoments: no samples yet")
        if self.count < 2:
            return torch.zeros_like(self._m2)
        return self._m2 / (self.count - 1)

    @property
    def std(self) -> torch.Tensor:
        return self.variance.sqrt()


def _check_truth(samples: torch.Tensor, x_true: torch.Tensor, dim: int) -> None:
    expected = samples.shape[:dim] + samples.shape[dim + 1 :]
    if not isinstance(x_true, torch.Tensor) or x_true.shape != expected:
        got = tuple(x_true.shape) if isinstance(x_true, torch.Tensor) else type(x_true).__name__
        raise ValueError(f"x_true: expected shape {tuple(expected)} (samples without the sample axis), got {got}")


def frequency_polar(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Direction (degrees in ``[0, 180)``) and radius of every frequency of a centred ``size x size`` FFT.

    The grid is that of ``fftshift(fft2(image))``: index ``(r, c)`` holds the frequency
    ``(k_row, k_col) = (r - N // 2, c - N // 2)`` (cycles per image). In the image axes of
    :mod:`invprob.operators.radon_backends` (``x`` right, ``y`` up, so ``k_y = -k_row``) the
    direction is ``phi = atan2(-k_row, k_col) mod 180``. By the Fourier-slice theorem the
    projection at angle ``theta`` samples the spectrum on the line ``phi = theta`` through the origin.
    Both are float64 tensors of shape ``(size, size)``; the zero frequency has direction 0, radius 0.
    """
    size = check_int(size, "size", minimum=1)
    k = torch.arange(size, dtype=torch.float64) - size // 2
    k_row, k_col = torch.meshgrid(k, k, indexing="ij")
    direction = torch.rad2deg(torch.atan2(-k_row, k_col)).remainder(180.0)
    direction = torch.where(direction < 180.0, direction, torch.zeros_like(direction)) + 0.0  # no 180.0, no -0.0
    return direction, torch.hypot(k_row, k_col)


def fourier_deviation(samples: torch.Tensor, p: float = 1.0, dim: int = 0) -> torch.Tensor:
    """Centred spectrum of the deviation ``E |F X - <F X>|^p`` over the samples' 2-D Fourier transforms.

    ``F`` is the orthonormal 2-D DFT over the last two axes, ``<F X>`` the mean of the samples'
    transforms and ``|.|`` the complex modulus; the result is ``fftshift``-ed so the zero
    frequency sits at index ``(H // 2, W // 2)`` (see :func:`frequency_polar`). With ``p = 1`` this
    is the Fourier spectrum of the mean absolute deviation of paper 000 sec. 4.3 / fig. 3; with
    ``p = 2`` it is the posterior variance per frequency, which sums (Parseval) to the sum of the
    pixel-wise ``1/S`` variances. Shape: ``samples`` without the sample axis.
    """
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not p > 0 or not math.isfinite(p):
        raise ValueError(f"p: expected a finite number > 0, got {p!r}")
    dim = _check_samples(samples, dim)
    if samples.dim() - dim < 3:
        raise ValueError(f"samples: expected two image axes after the sample axis {dim}, got shape {tuple(samples.shape)}")
    spectra = torch.fft.fft2(samples, norm="ortho")
    deviation = (spectra - spectra.mean(dim, keepdim=True)).abs().pow(p).mean(dim)
    return torch.fft.fftshift(deviation, dim=(-2, -1))


def missing_wedges(
    angles: Sequence[float] | np.ndarray | torch.Tensor, gap_factor: float = 2.0
) -> list[tuple[float, float]]:
    """Angular gaps of a CT scan, ``(start, end)`` in degrees with ``0 <= start < 180`` and ``end > start``.

    The angles (each in ``[0, 180)``) are sorted on the circle of directions modulo 180°; a gap
    between consecutive angles (the last one wrapping to the first plus 180°) counts as a missing
    wedge when it is at least ``gap_factor`` times the median gap. The default scan (30 angles
    in ``[30°, 150°]``) has one: ``(150, 210)``, the 60° wedge around the horizontal frequency axis.
    Evenly spread angles, and a single angle, have none (an empty list).
    """
    from .operators.ct import check_angles

    if not isinstance(gap_factor, (int, float)) or not gap_factor >= 1 or not math.isfinite(gap_factor):
        raise ValueError(f"gap_factor: expected a finite number >= 1, got {gap_factor!r}")
    a = np.unique(np.asarray(check_angles(angles), dtype=np.float64))
    ends = np.append(a[1:], a[0] + 180.0)
    widths = ends - a
    limit = gap_factor * float(np.median(widths)) * (1 - 1e-9)
    return [(float(s), float(e)) for s, e, w in zip(a, ends, widths) if w >= limit]


def wedge_mask(
    size: int, angles: Sequence[float] | np.ndarray | torch.Tensor, gap_factor: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks ``(inside, outside)`` of the missing wedge on a centred ``size x size`` spectrum.

    Only frequencies in the disc ``0 < |k| <= size // 2`` are counted (the corners beyond it exist
    only along the diagonals and would bias a comparison of directions). ``inside``: directions
    strictly inside a gap of :func:`missing_wedges`, i.e. frequencies no projection samples;
    ``outside``: the rest of the disc.
    """
    direction, radius = frequency_polar(size)
    disc = (radius > 0) & (radius <= size // 2)
    inside = torch.zeros_like(disc)
    for start, end in missing_wedges(angles, gap_factor):
        offset = (direction - start).remainder(180.0)
        inside |= (offset > 0) & (offset < end - start)
    inside &= disc
    return inside, disc & ~inside


def wedge_energy_ratio(
    samples: torch.Tensor, angles: Sequence[float] | np.ndarray | torch.Tensor, dim: int = 0, gap_factor: float = 2.0
) -> torch.Tensor:
    """Mean Fourier-domain deviation energy per frequency inside the missing wedge over that outside it.

    With ``V(k) = E |F X(k) - <F X(k)>|^2`` (:func:`fourier_deviation` with ``p = 2``), the ratio is
    ``mean_{k in wedge} V(k) / mean_{k outside} V(k)`` over the masks of :func:`wedge_mask` (and
    over any channel axes). It turns the cone of high uncertainty along the missing angles seen in
    paper 000 fig. 3 into a number: 1 means no preferred direction, above 1 more uncertainty where
    no projection looked. Returns shape ``samples.shape[:dim]``. Raises ``ValueError`` if the
    angles leave no missing wedge or the image is too small for the wedge to hold a frequency.
    """
    dim = _check_samples(samples, dim, minimum=2)
    size = samples.shape[-1]
    if samples.shape[-2] != size:
        raise ValueError(f"samples: expected square images, got {tuple(samples.shape[-2:])}")
    if not missing_wedges(angles, gap_factor):
        raise ValueError("angles: no missing wedge (no gap between consecutive angles stands out); the ratio is undefined")
    inside, outside = (m.to(samples.device) for m in wedge_mask(size, angles, gap_factor))
    if not bool(inside.any()) or not bool(outside.any()):
        raise ValueError(f"samples: a {size}x{size} spectrum has no frequency inside (or outside) the missing wedge")
    power = fourier_deviation(samples, p=2, dim=dim)
    power = power.reshape(*samples.shape[:dim], -1, size, size)
    return power[..., inside].mean((-1, -2)) / power[..., outside].mean((-1, -2))


def min_samples_for_level(level: float) -> int:
    """Fewest samples ``S`` whose empirical central interval can reach ``level``: ``S >= (1 + level) / (1 - level)``.

    The widest interval ``S`` exchangeable samples define, from their minimum to their maximum,
    holds a further draw from the same distribution with probability ``(S - 1) / (S + 1)``; a
    higher level cannot be estimated from them. 50 %: 3, 80 %: 9, 90 %: 19, 95 %: 39.
    """
    _check_level(level)
    return math.ceil((1 + level) / (1 - level) - 1e-9)


def coverage(
    samples: torch.Tensor,
    x_true: torch.Tensor,
    levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
    dim: int = 0,
) -> torch.Tensor:
    """Empirical coverage of pixel-wise central credible intervals: one value per level (float64).

    For each level ``l``, the fraction of entries of ``x_true`` (shaped as ``samples`` without the
    sample axis; every pixel of every image pooled) lying in ``[q_{(1-l)/2}, q_{(1+l)/2}]``, the
    empirical quantiles of :func:`credible_interval`. Calibrated uncertainty gives coverage close
    to ``l`` at every level (plotted against ``l``: the reliability diagram); below ``l`` means
    overconfident intervals. Raises ``ValueError`` when a level needs more samples than given
    (:func:`min_samples_for_level`).
    """
    levels = [float(_check_level(level)) for level in levels]
    if not levels:
        raise ValueError("levels: expected at least one level in (0, 1)")
    dim = _check_samples(samples, dim)
    _check_truth(samples, x_true, dim)
    needed = min_samples_for_level(max(levels))
    if samples.shape[dim] < needed:
        raise ValueError(
            f"samples: {samples.shape[dim]} posterior sample(s) cannot resolve a {max(levels):.0%} central interval "
            f"(S samples span at most (S-1)/(S+1) of the posterior); draw at least {needed}"
        )
    tails = [(1 - level) / 2 for level in levels]
    q = torch.tensor(tails + [1 - t for t in tails], dtype=samples.dtype, device=samples.device)
    bounds = torch.quantile(samples, q, dim=dim)
    lo, hi = bounds[: len(levels)], bounds[len(levels) :]
    inside = (lo <= x_true) & (x_true <= hi)
    return inside.flatten(1).double().mean(1).cpu()


def _check_level(level: object) -> float:
    if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0 < level < 1:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    return float(level)
