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
- :class:`RunningMoments`: Welford running mean and variance for streams of samples.
"""

from __future__ import annotations

import math

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
