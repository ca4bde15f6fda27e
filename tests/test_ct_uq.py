"""CT uncertainty quantification: Fourier-domain uncertainty, calibration and the ct_workflow / uq-ct pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from invprob import uq
from invprob.cli import main
from invprob.operators.ct import LimitedAngleCT, default_angles
from invprob.priors import TRUMPET, LinearGaussianPrior
from invprob.apps.ct_uq import FILES, MAP_KEYS, SUMMARY_KEYS, ct_workflow, parse_angles

SIZE = 16
ANGLES = [30.0, 45.0, 60.0, 75.0, 90.0, 105.0, 120.0, 135.0, 150.0]
FAST = dict(
    angles=ANGLES, n_samples=10, levels=(0.5, 0.8), map_options={"iterations": 3},
    sampler_options={"steps": 3, "batch_size": 2},
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny_prior() -> TRUMPET:
    torch.manual_seed(0)
    return TRUMPET((1, SIZE, SIZE), 32, n_scales=2, hidden=4, unet_depth=1, n_latent_steps=2, latent_hidden=16).eval()


# --- Fourier-domain uncertainty -------------------------------------------------------------


def test_fourier_deviation_is_the_mad_of_the_transforms_and_obeys_parseval():
    samples = torch.randn(30, 2, 8, 8, generator=gen(), dtype=torch.float64)
    spectra = torch.fft.fft2(samples, norm="ortho")
    expected = (spectra - spectra.mean(0)).abs().mean(0)
    torch.testing.assert_close(uq.fourier_deviation(samples, p=1), torch.fft.fftshift(expected, dim=(-2, -1)))
    power = uq.fourier_deviation(samples, p=2)
    torch.testing.assert_close(power.sum((-1, -2)), samples.var(0, unbiased=False).sum((-1, -2)))
    batched = uq.fourier_deviation(samples.unsqueeze(0).expand(3, -1, -1, -1, -1), dim=1)
    torch.testing.assert_close(batched[2], uq.fourier_deviation(samples))


@pytest.mark.parametrize("theta", [0.0, 20.0, 70.0, 120.0])
def test_frequency_directions_follow_the_fourier_slice_theorem_of_the_operator(theta):
    """The back-projection of a single-angle sinogram lives on the spectral line of direction theta."""
    op = LimitedAngleCT((1, 32, 32), angles=[theta])
    image = op.adjoint(torch.randn(1, *op.out_shape, generator=gen(1)))[0, 0].double()
    power = torch.fft.fftshift(torch.fft.fft2(image, norm="ortho")).abs().pow(2)
    direction, radius = uq.frequency_polar(32)
    ring = (radius > 2) & (radius <= 16)
    offset = (direction - theta).remainder(180.0)
    near = ring & ((offset < 10) | (offset > 170))
    assert float(power[near].sum() / power[ring].sum()) > 0.8


def test_missing_wedge_is_where_the_default_scan_puts_no_energy():
    op = LimitedAngleCT((1, 32, 32))
    images = op.adjoint(torch.randn(8, *op.out_shape, generator=gen(2))).double()
    power = torch.fft.fftshift(torch.fft.fft2(images, norm="ortho"), dim=(-2, -1)).abs().pow(2).mean((0, 1))
    inside, outside = uq.wedge_mask(32, op.angles)
    assert 0.2 < float(inside.sum() / (inside.sum() + outside.sum())) < 0.45  # a 60 degree wedge is a third of the disc
    assert float(power[inside].mean() / power[outside].mean()) < 0.25  # leakage of the discretised rays only


def test_missing_wedges():
    assert uq.missing_wedges(default_angles()) == [(150.0, 210.0)]
    assert uq.missing_wedges([30, 60, 90, 120, 150]) == [(150.0, 210.0)]
    assert uq.missing_wedges(np.arange(0, 180, 6.0)) == []
    assert uq.missing_wedges([0.0, 10.0, 20.0, 100.0, 110.0, 120.0]) == [(20.0, 100.0), (120.0, 180.0)]
    with pytest.raises(ValueError, match=r"\[0, 180\)"):
        uq.missing_wedges([10.0, 190.0])
    with pytest.raises(ValueError, match="at least one angle"):
        uq.missing_wedges([])


def _filtered_noise(gain: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Samples whose Fourier variance is ``gain(k)^2`` at the centred frequency k (white noise, filtered)."""
    white = torch.randn(n, 1, *gain.shape, generator=gen(seed), dtype=torch.float64)
    shaped = torch.fft.fft2(white, norm="ortho") * torch.fft.ifftshift(gain)
    return torch.fft.ifft2(shaped, norm="ortho").real


def test_wedge_energy_ratio_recovers_a_known_anisotropic_variance():
    inside, _ = uq.wedge_mask(32, ANGLES)
    gain = 1.0 + 2.0 * inside.double()  # variance 9 inside the wedge, 1 elsewhere
    samples = _filtered_noise(gain, 400, seed=3) + 5.0
    ratio = float(uq.wedge_energy_ratio(samples, ANGLES))
    assert ratio == pytest.approx(9.0, rel=0.1)
    fourier_mad = uq.fourier_deviation(samples, p=1)[0]
    _, outside = uq.wedge_mask(32, ANGLES)
    assert float(fourier_mad[inside].mean() / fourier_mad[outside].mean()) == pytest.approx(3.0, rel=0.1)
    flipped = _filtered_noise(1.0 + 2.0 * outside.double(), 400, seed=4)
    assert float(uq.wedge_energy_ratio(flipped, ANGLES)) == pytest.approx(1 / 9, rel=0.1)


def test_wedge_energy_ratio_of_stripes_follows_their_orientation():
    """Stripes varying along x (columns) put their variance on the horizontal frequency axis: the wedge."""
    amplitude = torch.randn(50, 1, 1, 1, generator=gen(5), dtype=torch.float64)
    wave = torch.cos(2 * math.pi * 3 * torch.arange(SIZE, dtype=torch.float64) / SIZE)
    noise = 0.01 * torch.randn(50, 1, SIZE, SIZE, generator=gen(6), dtype=torch.float64)
    vertical_stripes = amplitude * wave.expand(SIZE, SIZE) + noise
    horizontal_stripes = amplitude * wave[:, None].expand(SIZE, SIZE) + noise
    assert float(uq.wedge_energy_ratio(vertical_stripes, ANGLES)) > 100
    assert float(uq.wedge_energy_ratio(horizontal_stripes, ANGLES)) < 0.01
    batched = torch.stack([vertical_stripes, horizontal_stripes])
    assert uq.wedge_energy_ratio(batched, ANGLES, dim=1).shape == (2,)


def test_wedge_energy_ratio_needs_a_wedge():
    with pytest.raises(ValueError, match="no missing wedge"):
        uq.wedge_energy_ratio(torch.randn(4, 1, 8, 8), np.arange(0, 180, 10.0))


# --- calibration --------------------------------------------------------------------------------


def test_coverage_is_nominal_for_samples_of_the_true_gaussian():
    mu = torch.randn(8000, generator=gen(7)) * 3
    sd = torch.rand(8000, generator=gen(8)) + 0.2
    samples = mu + sd * torch.randn(400, 8000, generator=gen(9))
    truth = mu + sd * torch.randn(8000, generator=gen(10))
    levels = (0.5, 0.8, 0.9, 0.95)
    cov = uq.coverage(samples, truth, levels)
    assert cov.dtype == torch.float64
    torch.testing.assert_close(cov, torch.tensor(levels, dtype=torch.float64), atol=0.02, rtol=0)
    overconfident = uq.coverage(mu + 0.5 * (samples - mu), truth, levels)
    assert bool((overconfident < torch.tensor(levels, dtype=torch.float64) - 0.15).all())
    batched = uq.coverage(samples.T.reshape(4, 2000, 400).transpose(1, 2), truth.reshape(4, 2000), levels, dim=1)
    torch.testing.assert_close(batched, cov)


def test_coverage_says_when_there_are_too_few_samples():
    assert [uq.min_samples_for_level(level) for level in (0.5, 0.8, 0.9, 0.95)] == [3, 9, 19, 39]
    samples, truth = torch.randn(20, 5), torch.zeros(5)
    assert uq.coverage(samples, truth, (0.9,)).shape == (1,)
    with pytest.raises(ValueError, match="at least 39"):
        uq.coverage(samples, truth, (0.5, 0.95))
    with pytest.raises(ValueError, match="x_true"):
        uq.coverage(samples, torch.zeros(4), (0.5,))
    with pytest.raises(ValueError, match="level"):
        uq.coverage(samples, truth, (1.0,))


# --- the workflow ---------------------------------------------------------------------------------


def test_ct_workflow_end_to_end_writes_maps_figure_and_summary(tiny_prior, tmp_path):
    result = ct_workflow("ellipses:3", out=tmp_path, prior=tiny_prior, calibration=2, **FAST)
    for key, name in FILES.items():
        assert (tmp_path / name).is_file() and result.files[key] == tmp_path / name
    assert (tmp_path / FILES["figure"]).stat().st_size > 10_000
    with np.load(tmp_path / FILES["maps"]) as maps:
        assert set(maps.files) == set(MAP_KEYS)
        assert maps["samples"].shape == (10, 1, SIZE, SIZE)
        assert maps["mad_p1"].shape == maps["fourier_mad"].shape == (1, SIZE, SIZE)
        np.testing.assert_allclose(maps["mad_p2"], maps["samples"].var(0), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(maps["abs_error"], np.abs(maps["mean"] - maps["truth"]), atol=1e-6)
    summary = json.loads((tmp_path / FILES["summary"]).read_text())
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["phantom"] == "ellipses test phantom 3"
    assert summary["missing_wedges_deg"] == [[150.0, 210.0]]
    assert set(summary["metrics"]) == {"fbp", "map", "mean"}
    assert set(summary["metrics"]["map"]) == {"snr_db", "psnr_db", "ssim"}
    assert summary["wedge_energy_ratio"] > 0
    cal = summary["calibration"]
    assert cal["levels"] == [0.5, 0.8] and len(cal["coverage"]) == 2
    assert cal["phantoms"] == ["phantom", "ellipses test phantom 0", "ellipses test phantom 1"]
    assert cal["n_pixels"] == 3 * SIZE * SIZE and len(cal["per_phantom"]) == 3
    assert all(0 <= c <= 1 for c in cal["coverage"])
    assert set(summary["seconds"]) == {"map", "sampler", "per_sample", "calibration"}


def test_ct_workflow_is_calibrated_when_the_prior_is_the_truth(tmp_path):
    """Phantoms drawn from a linear-Gaussian prior, exact-target MALA: coverage near the nominal levels."""
    prior = LinearGaussianPrior(0.3 * torch.randn(SIZE * SIZE, 8, generator=gen(12)), data_shape=(1, SIZE, SIZE))
    truths = prior.sample(20, generator=gen(13))
    options = {"n_chains": 4, "burn_in": 300, "thin": 5, "step_size": 1e-3}
    result = ct_workflow(truths[0], prior=prior, calibration=truths[1:], out=tmp_path, angles=ANGLES, sampler="langevin",
                         n_samples=40, levels=(0.5, 0.8, 0.9), map_options={"iterations": 3}, sampler_options=options)
    cal = result.summary["calibration"]
    assert len(cal["phantoms"]) == 20
    np.testing.assert_allclose(cal["coverage"], [0.5, 0.8, 0.9], atol=0.06)


def test_ct_workflow_with_langevin_and_a_given_measurement(tiny_prior, tmp_path):
    op = LimitedAngleCT((1, SIZE, SIZE), ANGLES)
    y = op(torch.zeros(1, 1, SIZE, SIZE))[0] + 0.1 * torch.randn(op.out_shape, generator=gen(11))
    options = dict(FAST, sampler_options={"n_chains": 2, "burn_in": 2, "thin": 1, "step_size": 1e-5})
    result = ct_workflow(measurement=y.numpy(), sigma=0.1, sampler="langevin", calibration=0, out=tmp_path,
                         prior=tiny_prior, **options)
    summary = result.summary
    assert summary["metrics"] is None and summary["calibration"] is None and summary["snr_db"] is None
    assert summary["sampler"] == "langevin" and summary["n_samples"] == 10
    assert "truth" not in result.maps and "abs_error" not in result.maps
    assert not (tmp_path / FILES["reliability"]).exists() and (tmp_path / FILES["figure"]).is_file()


def test_ct_workflow_rejects_bad_inputs(tiny_prior, tmp_path):
    run = dict(out=tmp_path, prior=tiny_prior, **FAST)
    with pytest.raises(ValueError, match=r"\[0, 180\)"):
        ct_workflow(**dict(run, angles=[30.0, 180.0]))
    with pytest.raises(ValueError, match="at least one angle"):
        ct_workflow(**dict(run, angles=[]))
    with pytest.raises(ValueError, match="snr_db"):
        ct_workflow(snr_db=0.0, **run)
    with pytest.raises(ValueError, match="at least 39"):
        ct_workflow(**dict(run, levels=(0.5, 0.95)))
    with pytest.raises(ValueError, match="square"):
        ct_workflow(torch.zeros(SIZE, SIZE - 4), **run)
    with pytest.raises(ValueError, match="does not match the prior"):
        ct_workflow(torch.zeros(1, 8, 8), **run)
    np.save(tmp_path / "wide.npy", np.zeros((SIZE, 2 * SIZE), dtype=np.float32))
    with pytest.raises(ValueError, match="square"):
        ct_workflow(str(tmp_path / "wide.npy"), **run)
    np.save(tmp_path / "small.npy", np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="does not match the prior"):
        ct_workflow(str(tmp_path / "small.npy"), **run)
    with pytest.raises(ValueError, match="0..99"):
        ct_workflow("ellipses:100", **run)
    with pytest.raises(FileNotFoundError, match="neither"):
        ct_workflow(str(tmp_path / "missing.png"), **run)
    with pytest.raises(ValueError, match="sigma"):
        ct_workflow(measurement=np.zeros((1, 9, SIZE), dtype=np.float32), **run)
    with pytest.raises(ValueError, match="square images"):
        ct_workflow(prior=LinearGaussianPrior(torch.randn(32, 4), data_shape=(1, 4, 8)), out=tmp_path)
    with pytest.raises(ValueError, match="sampler"):
        ct_workflow(sampler="mcmc", **run)
    with pytest.raises(ValueError, match="calibration"):
        ct_workflow(calibration=100, **run)
    with pytest.raises(ValueError, match="calibration"):
        ct_workflow(calibration=torch.zeros(2, 1, 8, 8), **run)
    assert not any(tmp_path.glob("*.png"))


def test_parse_angles():
    np.testing.assert_allclose(parse_angles("30:150:30"), default_angles())
    np.testing.assert_allclose(parse_angles("0, 45,90"), [0.0, 45.0, 90.0])
    for bad in ("30:150", "a,b", "0:90:0"):
        with pytest.raises(ValueError, match="angles"):
            parse_angles(bad)


def test_cli_uq_ct(tiny_prior, tmp_path, capsys):
    tiny_prior.save(str(tmp_path / "prior"))
    out = tmp_path / "out"
    common = ["uq-ct", "--prior", str(tmp_path / "prior"), "--angles", "30:150:9", "--n-samples", "10",
              "--levels", "0.5,0.8", "--map-opt", "iterations=2", "--sampler-opt", "steps=2",
              "--sampler-opt", "batch_size=2", "--out", str(out), "--quiet"]
    assert main([*common, "--phantom", "shepp-logan", "--calibration", "1"]) == 0
    printed = capsys.readouterr().out
    assert "coverage over 2 phantom(s)" in printed and "inside / outside the missing wedge" in printed
    assert json.loads((out / FILES["summary"]).read_text())["phantom"] == "Shepp-Logan phantom"
    assert main([*common, "--snr", "-3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("invprob: error: snr_db") and err.count("\n") == 1
    assert main([*common, "--angles", "10,200"]) == 1
    assert "[0, 180)" in capsys.readouterr().err


def test_cli_uq_ct_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["uq-ct", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--phantom", "--measurement", "--sigma", "--prior", "--angles", "--snr", "--sampler",
                   "--n-samples", "--calibration", "--levels", "--map-opt", "--sampler-opt", "--seed", "--out"):
        assert option in text
