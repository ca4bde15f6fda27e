"""Uncertainty summaries (invprob.uq) on samples whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from invprob import uq


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mean_std_and_mad_agree_with_definitions():
    samples = torch.randn(50, 2, 3, 3, generator=gen()) * 2 + 1
    torch.testing.assert_close(uq.posterior_mean(samples), samples.mean(0))
    torch.testing.assert_close(uq.posterior_std(samples), samples.std(0))
    mad2 = uq.mean_absolute_deviation(samples, p=2)
    torch.testing.assert_close(mad2, samples.var(0, unbiased=False))
    torch.testing.assert_close(
        uq.mean_absolute_deviation(samples, p=1), (samples - samples.mean(0)).abs().mean(0)
    )
    batched = samples.unsqueeze(0).expand(3, -1, -1, -1, -1)
    assert uq.posterior_std(batched, dim=1).shape == (3, 2, 3, 3)
    torch.testing.assert_close(uq.mean_absolute_deviation(batched, p=2, dim=1)[1], mad2)


def test_mad_of_a_gaussian_is_sigma_sqrt_2_over_pi():
    samples = 3.0 * torch.randn(200_000, 2, generator=gen(1))
    mad = uq.mean_absolute_deviation(samples, p=1)
    torch.testing.assert_close(mad, torch.full((2,), 3.0 * math.sqrt(2 / math.pi)), rtol=0.01, atol=0)


def test_credible_interval_covers_its_level():
    samples = torch.randn(20_000, 4, generator=gen(2))
    lo, hi = uq.credible_interval(samples, level=0.9)
    z95 = torch.full((4,), 1.6449)  # the standard normal's 95 % quantile; the estimate's std is about 0.015
    torch.testing.assert_close(hi, z95, atol=0.06, rtol=0)
    torch.testing.assert_close(lo, -z95, atol=0.06, rtol=0)
    assert torch.all(lo < hi)
    fresh = torch.randn(20_000, 4, generator=gen(3))
    coverage = ((fresh >= lo) & (fresh <= hi)).double().mean()
    assert abs(float(coverage) - 0.9) < 0.01


def test_snr_of_known_errors():
    x = torch.ones(2, 1, 2, 2)
    err = torch.zeros_like(x)
    err[:, 0, 0, 0] = torch.tensor([0.2, 0.02])
    values = uq.snr(x + err, x, batch_dims=1)
    torch.testing.assert_close(values, 20 * torch.log10(torch.tensor([2.0 / 0.2, 2.0 / 0.02])))
    assert uq.snr(x[0] + err[0], x[0]).dim() == 0


def test_per_sample_and_mmse_snr():
    truth = torch.randn(1, 4, 4, generator=gen(4))
    samples = truth + 0.3 * torch.randn(64, 1, 4, 4, generator=gen(5))
    per_sample = uq.sample_snr(samples, truth)
    assert per_sample.shape == (64,)
    torch.testing.assert_close(per_sample[3], uq.snr(samples[3], truth))
    mmse = uq.mmse_snr(samples, truth)
    assert float(mmse) > float(per_sample.mean()) + 10  # averaging 64 samples: about 18 dB better
    batched = samples.unsqueeze(0).expand(2, -1, -1, -1, -1)
    truth2 = truth.unsqueeze(0).expand(2, -1, -1, -1)
    assert uq.sample_snr(batched, truth2, dim=1).shape == (2, 64)
    assert uq.mmse_snr(batched, truth2, dim=1).shape == (2,)
    with pytest.raises(ValueError, match="x_true"):
        uq.mmse_snr(samples, truth[0])


def test_diversity_is_the_mean_pairwise_distance():
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    assert float(uq.diversity(points)) == pytest.approx((5 + 4 + 3) / 3)
    assert float(uq.diversity(torch.zeros(5, 3))) == 0.0
    assert uq.diversity(torch.randn(2, 6, 3), dim=1).shape == (2,)


def _ar1(rho: float, chains: int, draws: int, seed: int) -> torch.Tensor:
    g = gen(seed)
    x = torch.zeros(chains, draws, 3, dtype=torch.float64)
    x[:, 0] = torch.randn(chains, 3, generator=g, dtype=torch.float64)
    scale = math.sqrt(1 - rho**2)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + scale * torch.randn(chains, 3, generator=g, dtype=torch.float64)
    return x


def test_effective_sample_size_of_known_chains():
    iid = uq.effective_sample_size(torch.randn(4, 2000, 3, generator=gen(6), dtype=torch.float64))
    assert torch.all((iid > 0.85 * 8000) & (iid < 1.15 * 8000))
    rho = 0.9
    ar = uq.effective_sample_size(_ar1(rho, 4, 4000, 7))
    expected = 16000 * (1 - rho) / (1 + rho)
    assert torch.all((ar > 0.75 * expected) & (ar < 1.25 * expected)), (ar, expected)
    assert torch.all(uq.effective_sample_size(torch.ones(2, 10, 2)) == 20)


def test_stuck_chains_have_a_small_ess():
    """Chains that never move, each at its own value: ESS about the number of chains, not C * S."""
    stuck = torch.arange(8.0).view(8, 1, 1).expand(8, 100, 1)
    assert float(uq.effective_sample_size(stuck)) < 8


def test_running_moments_match_the_batch_statistics():
    data = torch.randn(3, 37, 5, generator=gen(8), dtype=torch.float64) * 4 + 100
    moments = uq.RunningMoments()
    for chunk in data.split([1, 10, 26], dim=1):
        moments.update(chunk, dim=1)
    assert moments.count == 37
    torch.testing.assert_close(moments.mean, data.mean(1))
    torch.testing.assert_close(moments.variance, data.var(1))
    torch.testing.assert_close(moments.std, data.std(1))
    with pytest.raises(ValueError, match="no samples"):
        _ = uq.RunningMoments().variance


def test_bad_input_is_rejected():
    samples = torch.randn(10, 3)
    with pytest.raises(ValueError, match="p"):
        uq.mean_absolute_deviation(samples, p=0)
    with pytest.raises(ValueError, match="level"):
        uq.credible_interval(samples, level=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        uq.posterior_std(samples[:1])
    with pytest.raises(ValueError, match="at least 1"):
        uq.posterior_mean(samples[:0])
    with pytest.raises(ValueError, match="dim"):
        uq.posterior_mean(samples, dim=2)
    with pytest.raises(ValueError, match="non-finite"):
        uq.posterior_mean(torch.tensor([[float("nan")]]))
    with pytest.raises(TypeError, match="samples"):
        uq.posterior_mean([1.0, 2.0])
    with pytest.raises(ValueError, match="4 draws"):
        uq.effective_sample_size(torch.randn(2, 3))
    with pytest.raises(ValueError, match="shape"):
        uq.snr(torch.zeros(3), torch.zeros(4))
