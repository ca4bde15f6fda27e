"""Statistics of Markov chains: running moments (Welford) and the effective sample size.

These live beside the samplers that produce the chains (:mod:`invprob.solvers.mcmc`);
:mod:`invprob.uq` re-exports them for analyses of stored samples.

References: Welford 1962, "Note on a method for calculating corrected sums of squares and
products"; Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing
sample variances"; Geyer 1992, "Practical Markov chain Monte Carlo"; Vehtari, Gelman, Simpson,
Carpenter, Bürkner 2021, "Rank-normalization, folding, and localization: an improved R-hat for
assessing convergence of MCMC".

Example:
    >>> import torch
    >>> moments = RunningMoments()
    >>> for part in torch.arange(10.0).reshape(5, 2, 1):
    ...     moments.update(part, dim=0)
    >>> float(moments.mean), round(float(moments.variance), 4), moments.count
    (4.5, 9.1667, 10)
"""

from __future__ import annotations

import math

import torch

from .._checks import check_finite

__all__ = ["RunningMoments", "effective_sample_size"]


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
