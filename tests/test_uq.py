"""Uncertainty summaries (invprob.uq) on samples whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from invprob import uq
from invprob.metrics import snr
from invprob.operators.ct import LimitedAngleCT


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


def test_per_sample_and_mmse_snr():
    truth = torch.randn(1, 4, 4, generator=gen(4))
    samples = truth + 0.3 * torch.randn(64, 1, 4, 4, generator=gen(5))
    per_sample = uq.sample_snr(samples, truth)
    assert per_sample.shape == (64,)
    torch.testing.assert_close(per_sample[3], snr(truth[None], samples[3][None])[0])
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
    assert not hasattr(uq, "snr")  # one SNR in the package: invprob.metrics.snr(x_true, x_hat)


# --- conformal calibration ------------------------------------------------------------------------

LEVELS = (0.5, 0.8, 0.9, 0.95)


def _gaussian_phantoms(k: int, pixels: int, seed: int, scale: float = 0.5, n_samples: int = 40):
    """Truths drawn from N(mu, sd^2) per pixel, and samples from the wrong N(mu, (scale sd)^2)."""
    g = gen(seed)
    mu = torch.randn(k, pixels, generator=g, dtype=torch.float64)
    sd = 0.2 + torch.rand(k, pixels, generator=g, dtype=torch.float64)
    truths = mu + sd * torch.randn(k, pixels, generator=g, dtype=torch.float64)
    samples = mu[:, None] + scale * sd[:, None] * torch.randn(k, n_samples, pixels, generator=g, dtype=torch.float64)
    return samples, truths


def test_calibration_restores_nominal_coverage_of_an_overconfident_gaussian():
    samples, truths = _gaussian_phantoms(20, 400, seed=20)
    cal = uq.ConformalCalibrator.fit(samples, truths, LEVELS)
    test_samples, test_truths = _gaussian_phantoms(50, 400, seed=21)
    raw = uq.coverage(test_samples, test_truths, LEVELS, dim=1)
    assert bool((raw < torch.tensor(LEVELS, dtype=torch.float64) - 0.2).all())  # half the true spread: far too narrow
    calibrated = cal.coverage(test_samples, test_truths, dim=1)
    # 8,000 independent calibration scores and 20,000 test pixels: the coverage's standard error is
    # at most sqrt(0.25 / 8000 + 0.25 / 20000) = 0.0066, so 0.025 is about 4 standard errors.
    torch.testing.assert_close(calibrated, torch.tensor(LEVELS, dtype=torch.float64), atol=0.025, rtol=0)
    # the scales are about twice the standard normal's quantiles (the sampler's spread is half the truth's)
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor([(1 + level) / 2 for level in LEVELS]))
    torch.testing.assert_close(torch.tensor(cal.scales, dtype=torch.float32), 2 * z, rtol=0.1, atol=0)
    lo, hi = cal.intervals(test_samples[0])
    assert lo.shape == hi.shape == (4, 400) and bool((lo <= hi).all())
    widths = cal.width(test_samples, dim=1)
    assert bool((widths[1:] > widths[:-1]).all())


def test_phantom_correction_is_conservative_by_at_most_level_over_k():
    samples, truths = _gaussian_phantoms(20, 400, seed=22)
    cal = uq.ConformalCalibrator.fit(samples, truths, LEVELS, correction="phantoms")
    test_samples, test_truths = _gaussian_phantoms(50, 400, seed=23)
    calibrated = cal.coverage(test_samples, test_truths, dim=1)
    nominal = torch.tensor(LEVELS, dtype=torch.float64)
    assert bool((calibrated >= nominal - 0.01).all())
    assert bool((calibrated <= (nominal * 21 / 20).clamp(max=1) + 0.015).all())  # 4 standard errors of 20,000 pixels


def test_calibration_accepts_a_sequence_of_pairs_and_another_sample_axis():
    samples, truths = _gaussian_phantoms(10, 50, seed=24)
    stacked = uq.ConformalCalibrator.fit(samples, truths, (0.5, 0.9))
    pairs = uq.ConformalCalibrator.fit(list(samples), list(truths), (0.9, 0.5))
    moved = uq.ConformalCalibrator.fit(samples.transpose(0, 1), truths, (0.5, 0.9), dim=0)
    assert stacked.scales == pairs.scales == moved.scales and stacked.levels == (0.5, 0.9)


def test_calibration_refuses_a_set_too_small_for_the_level():
    assert [uq.min_calibration_phantoms(level) for level in LEVELS] == [1, 4, 9, 19]
    samples, truths = _gaussian_phantoms(18, 20, seed=25)
    with pytest.raises(ValueError, match="18 phantom.*95%.*at least 19"):
        uq.ConformalCalibrator.fit(samples, truths, LEVELS)
    assert uq.ConformalCalibrator.fit(samples, truths, (0.5, 0.9)).n_phantoms == 18
    with pytest.raises(ValueError, match="x_true"):
        uq.ConformalCalibrator.fit(samples, truths[:, :5], (0.5,))
    with pytest.raises(ValueError, match="correction"):
        uq.ConformalCalibrator.fit(samples, truths, (0.5,), correction="images")
    with pytest.raises(ValueError, match="levels"):
        uq.ConformalCalibrator.fit(samples, truths, ())
    with pytest.raises(ValueError, match="at least 2"):
        uq.ConformalCalibrator.fit(samples[:, :1], truths, (0.5,))


def test_calibrator_save_load_round_trip(tmp_path):
    samples, truths = _gaussian_phantoms(10, 50, seed=26)
    context = {"prior": "abc", "sampler": "svi", "sampler_options": {"steps": 3}, "residual": None}
    cal = uq.ConformalCalibrator.fit(samples, truths, (0.5, 0.8, 0.9), misfit=[1.0] * 10, context=context)
    path = cal.save(tmp_path / "sub" / "calibration.json")
    assert path.stat().st_size < 2000
    back = uq.ConformalCalibrator.load(path)
    assert back.to_dict() == cal.to_dict() and back.context == context
    test_samples, test_truths = _gaussian_phantoms(3, 50, seed=27)
    torch.testing.assert_close(back.coverage(test_samples, test_truths, dim=1),
                               cal.coverage(test_samples, test_truths, dim=1))


def test_calibrator_save_is_atomic(tmp_path, monkeypatch):
    samples, truths = _gaussian_phantoms(10, 50, seed=28)
    first = uq.ConformalCalibrator.fit(samples, truths, (0.5,))
    path = first.save(tmp_path / "calibration.json")
    before = path.read_text()
    second = uq.ConformalCalibrator.fit(samples * 2, truths, (0.5, 0.9))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("invprob.uq.calibration.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        second.save(path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["calibration.json"]


@pytest.mark.parametrize("content, words", [
    ("not json", "not readable JSON"),
    ("[1, 2]", "format"),
    ('{"format": "invprob.uq.ConformalCalibrator", "version": 7}', "version 1"),
    ('{"format": "invprob.uq.ConformalCalibrator", "version": 1, "levels": [0.5]}', "missing field"),
    ('{"format": "invprob.uq.ConformalCalibrator", "version": 1, "levels": [0.5], "scales": [1.0, 2.0], '
     '"std_floor": 0.1, "n_phantoms": 3, "n_pixels": 4, "correction": "pixels"}', "one per level"),
    ('{"format": "invprob.uq.ConformalCalibrator", "version": 1, "levels": [0.95], "scales": [1.0], '
     '"std_floor": 0.1, "n_phantoms": 3, "n_pixels": 4, "correction": "pixels"}', "at least 19"),
])
def test_calibrator_load_errors_name_the_file(tmp_path, content, words):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(uq.CalibrationError, match=words) as info:
        uq.ConformalCalibrator.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(uq.CalibrationError, match="no such file"):
        uq.ConformalCalibrator.load(tmp_path / "missing.json")


# --- out-of-reach check ----------------------------------------------------------------------------


def test_chi2_tail_matches_known_values():
    assert uq.reach.chi2_sf(3.841, 1) == pytest.approx(0.05, abs=1e-3)
    assert uq.reach.chi2_sf(124.342, 100) == pytest.approx(0.05, abs=1e-3)
    assert uq.reach.chi2_sf(0.0, 10) == 1.0


def test_residual_chi2_accepts_the_truth_and_flags_an_image_the_data_refute():
    op = LimitedAngleCT((1, 16, 16), angles=[30.0, 60.0, 90.0, 120.0, 150.0])
    truth = torch.zeros(1, 16, 16)
    truth[:, 4:12, 5:10] = 1.0
    sigma = 0.05
    y = op(truth[None])[0] + sigma * torch.randn(op.out_shape, generator=gen(30))
    at_truth = uq.residual_chi2(op, truth, y, sigma)
    assert at_truth.dof == y.numel() and 0.8 < at_truth.reduced < 1.2 and at_truth.p_value > 1e-3
    assert not uq.reach_check(at_truth).out_of_reach
    wrong = uq.residual_chi2(op, torch.zeros_like(truth), y, sigma)
    check = uq.reach_check(wrong)
    assert wrong.reduced > 10 and check.out_of_reach and "chi2/m" in check.reason
    # a reference set of calibration misfits at least as large: within reach after all
    relaxed = uq.reach_check(wrong, reference=[1.0, 2.0 * wrong.reduced])
    assert not relaxed.out_of_reach and relaxed.conformal_p_value == pytest.approx(2 / 3)
    assert uq.reach_check(wrong, reference=[1.0, 1.1]).out_of_reach
    assert not uq.reach_check(wrong, reference=[1.0, wrong.reduced / 1.2]).out_of_reach  # within the 1.5 margin
    assert uq.reach_check(wrong, reference=[1.0, wrong.reduced / 1.2], margin=1.1).out_of_reach
    with pytest.raises(ValueError, match="sigma"):
        uq.residual_chi2(op, truth, y, 0.0)
