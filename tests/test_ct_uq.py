"""CT uncertainty quantification: Fourier-domain uncertainty, calibration and the ct_workflow / uq-ct pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from invprob import uq
from invprob.cli import main
from invprob.data import load_dataset
from invprob.operators.ct import LimitedAngleCT, default_angles
from invprob.priors import TRUMPET, LinearGaussianPrior
from invprob.apps.ct_uq.reconstruction import map_estimate, map_start, with_residual
from invprob.solvers import solve
from invprob.apps.ct_uq import FILES, MAP_KEYS, SUMMARY_KEYS, ct_workflow, load_phantom, parse_angles, parse_levels

# The workflow runs here on tiny untrained or few-step priors with 2-3 MAP iterations: its MAP does not fit the
# sinogram, and iFlow-L's MisfitWarning says so (tested in the solver's own tests).
pytestmark = pytest.mark.filterwarnings("ignore::invprob.solvers.base.MisfitWarning")

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
    prior = TRUMPET((1, SIZE, SIZE), 32, n_scales=2, hidden=4, unet_depth=1, n_latent_steps=2, latent_hidden=16)
    with torch.no_grad():  # the data-dependent (ActNorm) initialisation a trained prior has had
        prior.latent_flow_log_prob(prior.g_pinv(torch.rand(8, 1, SIZE, SIZE, generator=gen(1)) * 2 - 1)[0])
    assert prior.is_initialized
    return prior.eval()


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
    assert uq.missing_wedges(default_angles()) == [(150.0, 30.0)]  # [0, 180) like the angles, wrapping through 0
    assert uq.missing_wedges([30, 60, 90, 120, 150]) == [(150.0, 30.0)]
    assert uq.missing_wedges(np.arange(0, 180, 6.0)) == []
    assert uq.missing_wedges([0.0, 10.0, 20.0, 100.0, 110.0, 120.0]) == [(20.0, 100.0), (120.0, 0.0)]
    assert [uq.wedge_width(w) for w in uq.missing_wedges([0.0, 10.0, 20.0, 100.0, 110.0, 120.0])] == [80.0, 60.0]
    for wedge in uq.missing_wedges([5.0, 15.0, 25.0, 35.0, 45.0]):
        assert all(0 <= a < 180 for a in wedge)
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


def test_ct_workflow_end_to_end_writes_maps_figure_summary_and_calibrator(tiny_prior, tmp_path):
    result = ct_workflow("ellipses:3", out=tmp_path, prior=tiny_prior, evaluation=2, calibrate=4, **FAST)
    for key, name in FILES.items():
        assert (tmp_path / name).is_file() and result.files[key] == tmp_path / name
    assert (tmp_path / FILES["figure"]).stat().st_size > 10_000
    with np.load(tmp_path / FILES["maps"]) as maps:
        assert set(maps.files) == set(MAP_KEYS)
        assert maps["samples"].shape == (10, 1, SIZE, SIZE)
        assert maps["mad_p1"].shape == maps["fourier_mad"].shape == (1, SIZE, SIZE)
        assert maps["calibrated_lo"].shape == (2, 1, SIZE, SIZE) and (maps["calibrated_lo"] <= maps["calibrated_hi"]).all()
        np.testing.assert_allclose(maps["mad_p2"], maps["samples"].var(0), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(maps["abs_error"], np.abs(maps["mean"] - maps["truth"]), atol=1e-6)
    summary = json.loads((tmp_path / FILES["summary"]).read_text())
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["phantom"] == "ellipses test phantom 3"
    assert summary["missing_wedges_deg"] == [[150.0, 30.0]] and summary["angle_range_deg"] == [30.0, 150.0]
    assert set(summary["metrics"]) == {"fbp", "map", "mean"}
    assert set(summary["metrics"]["map"]) == {"snr_db", "psnr_db", "ssim"}
    assert summary["wedge_energy_ratio"] > 0
    assert set(summary["reach"]) >= {"out_of_reach", "reason", "misfit"} and summary["reach"]["misfit"]["dof"] == 9 * SIZE
    cov = summary["coverage"]
    assert cov["levels"] == [0.5, 0.8] and len(cov["raw"]) == len(cov["calibrated"]) == len(cov["raw_width"]) == 2
    assert cov["phantoms"] == ["phantom", "ellipses test phantom 0", "ellipses test phantom 1"]
    assert cov["n_pixels"] == 3 * SIZE * SIZE and len(cov["per_phantom_raw"]) == 3
    assert all(0 <= c <= 1 for c in cov["raw"] + cov["calibrated"])
    cal = summary["calibration"]
    assert cal["n_phantoms"] == 4 and cal["phantoms"] == [f"ellipses test phantom {i}" for i in range(100, 104)]
    assert cal["fitted_here"] and len(cal["scales"]) == 2
    assert set(summary["seconds"]) == {"map", "sampler", "per_sample", "calibration"}
    assert summary["resumed_stages"] == []
    assert summary["residual_model"]["n_images"] == 256
    assert summary["residual_model"]["source"] == "fitted on 256 training ellipses"
    loaded = uq.ConformalCalibrator.load(tmp_path / FILES["calibrator"])
    assert loaded.scales == result.calibrator.scales and len(loaded.misfit) == 4


def test_the_residual_model_adds_a_conditioned_draw_to_each_range_sample(tiny_prior, tmp_path):
    run = dict(FAST, prior=tiny_prior, map_options={"iterations": 2})
    on_range = ct_workflow("ellipses:2", out=tmp_path / "none", residual=None, **run)
    widened = ct_workflow("ellipses:2", out=tmp_path / "default", **run)
    assert on_range.summary["residual_model"] is None
    train = load_dataset("ellipses", split="train", size=SIZE)
    images = torch.stack([train[i] for i in range(256)])
    residual = uq.EdgeAdaptiveResidual.fit(tiny_prior, images)
    rec = on_range.reconstruction
    op = LimitedAngleCT((1, SIZE, SIZE), ANGLES)
    with torch.no_grad():
        expected_map = residual.condition_mean(op, rec.map[None], rec.y, rec.sigma)[0]
    torch.testing.assert_close(widened.reconstruction.map, expected_map, rtol=1e-4, atol=1e-5)
    assert widened.summary["residual_model"]["model"] == "EdgeAdaptiveResidual"
    pixel = ct_workflow("ellipses:2", out=tmp_path / "pixel", residual="ellipses-pixel", **run)
    with torch.no_grad():
        pixel_map = uq.GaussianResidual.fit(tiny_prior, images).condition_mean(op, rec.map[None], rec.y, rec.sigma)[0]
    torch.testing.assert_close(pixel.reconstruction.map, pixel_map, rtol=1e-4, atol=1e-5)
    assert pixel.summary["residual_model"]["model"] == "GaussianResidual"
    added = widened.reconstruction.samples - rec.samples  # the same range samples (same seed), plus r
    assert float(added.std(0).mean()) > 0.01
    assert float(widened.reconstruction.std.mean()) > float(rec.std.mean())
    torch.testing.assert_close(widened.reconstruction.range_mean, rec.mean)  # the reach check's misfit is the range's
    whitened = residual.misfit(op, rec.mean, rec.y, rec.sigma)  # the range's mean, under the residual's covariance
    assert widened.summary["reach"]["misfit"]["reduced"] == pytest.approx(whitened.reduced, rel=1e-4)
    assert on_range.summary["reach"]["misfit"]["reduced"] == pytest.approx(
        uq.residual_chi2(op, rec.mean, rec.y, rec.sigma).reduced, rel=1e-6)
    given = ct_workflow("ellipses:2", out=tmp_path / "given", residual=images, **run)
    torch.testing.assert_close(given.reconstruction.samples, widened.reconstruction.samples)
    assert given.summary["residual_model"]["source"] == "fitted on the 256 images given as residual"
    assert given.summary["residual_model"]["digest"] == widened.summary["residual_model"]["digest"]
    for bad, words in (("gaussian", r"residual: expected one of \['ellipses', 'ellipses-pixel'\]"), (torch.zeros(3, 1, 8, 8), r"\(K, 1, 16, 16\)")):
        with pytest.raises(ValueError, match=words):
            ct_workflow("ellipses:2", out=tmp_path / "bad", residual=bad, **run)
    with pytest.raises(ValueError, match=r"residual: expected a model of images \(1, 16, 16\), got one of \(1, 8, 8\)"):
        ct_workflow("ellipses:2", out=tmp_path / "bad", residual=uq.GaussianResidual(
            torch.zeros(1, 8, 8), torch.ones(1, 8, 8), n_images=2), **run)
    with pytest.raises(ValueError, match="model_error: .* give one of them"):
        ct_workflow("ellipses:2", out=tmp_path / "bad", model_error=0.1, **run)
    with pytest.raises(ValueError, match="added to these samples already"):
        with_residual(op, residual, widened.reconstruction)


def test_stages_of_another_residual_model_are_not_reused(tiny_prior, tmp_path):
    run = dict(FAST, prior=tiny_prior, map_options={"iterations": 2}, out=tmp_path)
    first = ct_workflow("ellipses:2", residual=None, **run)
    assert ct_workflow("ellipses:2", residual=None, **run).summary["resumed_stages"] == ["phantom"]
    train = load_dataset("ellipses", split="train", size=SIZE)
    images = torch.stack([train[i] for i in range(8)])
    other = ct_workflow("ellipses:2", residual=images, **run)
    assert other.summary["resumed_stages"] == []
    shifted = ct_workflow("ellipses:2", residual=images + 0.01, **run)  # same count, other statistics
    assert shifted.summary["resumed_stages"] == []
    resumed = ct_workflow("ellipses:2", residual=images + 0.01, **run)
    assert resumed.summary["resumed_stages"] == ["phantom"]
    torch.testing.assert_close(resumed.reconstruction.range_mean, shifted.reconstruction.range_mean)
    assert resumed.summary["reach"] == shifted.summary["reach"]
    torch.testing.assert_close(shifted.reconstruction.range_mean, first.reconstruction.mean)


@pytest.fixture(scope="module")
def gaussian_world(tmp_path_factory):
    """A linear-Gaussian prior, phantoms drawn from it (on its range: no residual model), exact-target MALA, and a
    calibrator fitted on 10 of them."""
    prior = LinearGaussianPrior(0.3 * torch.randn(SIZE * SIZE, 8, generator=gen(12)), data_shape=(1, SIZE, SIZE))
    truths = prior.sample(21, generator=gen(13))
    run = dict(prior=prior, angles=ANGLES, sampler="langevin", n_samples=40, levels=(0.5, 0.8, 0.9), residual=None,
               map_options={"iterations": 3},
               sampler_options={"n_chains": 4, "burn_in": 300, "thin": 5, "step_size": 1e-3})
    out = tmp_path_factory.mktemp("gaussian")
    result = ct_workflow(truths[0], out=out, evaluation=truths[1:11], calibrate=truths[11:21], **run)
    return run, result, out


def test_ct_workflow_is_calibrated_when_the_prior_is_the_truth(gaussian_world):
    """Raw MALA intervals of the true posterior are calibrated already; the conformal scales keep them so."""
    _, result, _ = gaussian_world
    cov = result.summary["coverage"]
    assert len(cov["phantoms"]) == 11
    np.testing.assert_allclose(cov["raw"], [0.5, 0.8, 0.9], atol=0.06)
    np.testing.assert_allclose(cov["calibrated"], [0.5, 0.8, 0.9], atol=0.08)
    assert not result.summary["reach"]["out_of_reach"] and result.summary["calibration"]["claimed_for_this_input"]


def test_an_input_unlike_the_prior_is_flagged_out_of_reach(gaussian_world, tmp_path, capsys):
    """A Shepp-Logan slice lies far off the 8-dimensional range of the prior: its data misfit gives it away."""
    run, _, out = gaussian_world
    result = ct_workflow("shepp-logan", out=tmp_path, calibrate=out / FILES["calibrator"], **run)
    reach = result.summary["reach"]
    assert reach["out_of_reach"] and reach["misfit"]["reduced"] > 10 * reach["reference_max"]
    assert not result.summary["calibration"]["claimed_for_this_input"]
    assert "not claimed" in result.summary["calibration"]["note"]
    assert json.loads((tmp_path / FILES["summary"]).read_text())["reach"]["out_of_reach"] is True


def test_ct_workflow_with_langevin_and_a_given_measurement(tiny_prior, tmp_path):
    op = LimitedAngleCT((1, SIZE, SIZE), ANGLES)
    y = op(torch.zeros(1, 1, SIZE, SIZE))[0] + 0.1 * torch.randn(op.out_shape, generator=gen(11))
    options = dict(FAST, sampler_options={"n_chains": 2, "burn_in": 2, "thin": 1, "step_size": 1e-5})
    result = ct_workflow(measurement=y.numpy(), sigma=0.1, sampler="langevin", out=tmp_path, prior=tiny_prior, **options)
    summary = result.summary
    assert summary["metrics"] is None and summary["coverage"] is None and summary["snr_db"] is None
    assert summary["calibration"] is None and summary["sampler"] == "langevin" and summary["n_samples"] == 10
    assert "truth" not in result.maps and "abs_error" not in result.maps
    assert not (tmp_path / FILES["reliability"]).exists() and (tmp_path / FILES["figure"]).is_file()


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    prior = LinearGaussianPrior(0.3 * torch.randn(SIZE * SIZE, 4, generator=gen(40)), data_shape=(1, SIZE, SIZE))
    run = dict(prior=prior, angles=ANGLES, sampler="langevin", n_samples=10, levels=(0.5, 0.8), evaluation=2,
               calibrate=4, map_options={"iterations": 2},
               sampler_options={"n_chains": 2, "burn_in": 5, "thin": 1, "step_size": 1e-3})
    reference = ct_workflow("ellipses:5", out=tmp_path / "reference", **run)
    from invprob.apps.ct_uq import calibrate as calibrate_module
    from invprob.apps.ct_uq import workflow as workflow_module

    real = calibrate_module.reconstruct
    calls, fail_at = [], [4]

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) in fail_at:
            raise Interrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(calibrate_module, "reconstruct", flaky)
    monkeypatch.setattr(workflow_module, "reconstruct", flaky)
    with pytest.raises(Interrupt):
        ct_workflow("ellipses:5", out=tmp_path / "run", **run)
    assert len(list((tmp_path / "run" / "stages").glob("*.npz"))) == 3  # phantom, 2 evaluation phantoms
    assert not (tmp_path / "run" / FILES["summary"]).exists()
    calls.clear()
    fail_at.clear()
    resumed = ct_workflow("ellipses:5", out=tmp_path / "run", **run)
    assert len(calls) == 4  # only the 4 calibration phantoms were left
    assert resumed.summary["resumed_stages"] == ["phantom", "evaluation-000", "evaluation-001"]
    np.testing.assert_array_equal(resumed.maps["samples"], reference.maps["samples"])
    assert resumed.summary["coverage"] == reference.summary["coverage"]
    assert resumed.calibrator.scales == reference.calibrator.scales
    calls.clear()
    ct_workflow("ellipses:5", out=tmp_path / "run", **dict(run, n_samples=12))  # other settings: start afresh
    assert len(calls) == 7


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
    with pytest.raises(ValueError, match="evaluation"):
        ct_workflow(evaluation=100, **run)
    with pytest.raises(ValueError, match="evaluation"):
        ct_workflow(evaluation=torch.zeros(2, 1, 8, 8), **run)
    with pytest.raises(ValueError, match="calibrate: 3 phantom.*80%.*at least 4"):
        ct_workflow(calibrate=3, **run)
    with pytest.raises(uq.CalibrationError, match="no such file"):
        ct_workflow(calibrate=str(tmp_path / "missing.json"), **run)
    assert not any(tmp_path.glob("*.png")) and not (tmp_path / "stages").exists()


def test_parse_angles_and_levels():
    np.testing.assert_allclose(parse_angles("30:150:30"), default_angles())
    np.testing.assert_allclose(parse_angles("0, 45,90"), [0.0, 45.0, 90.0])
    for bad in ("30:150", "a,b", "0:90:0"):
        with pytest.raises(ValueError, match="angles"):
            parse_angles(bad)
    assert parse_levels("0.5,0.9") == (0.5, 0.9)
    with pytest.raises(ValueError, match="levels: .*'abc'"):
        parse_levels("0.5,abc")
    with pytest.raises(ValueError, match="levels"):
        parse_levels(" , ")


# --- DICOM ----------------------------------------------------------------------------------------


def write_dicom(path, stored, *, slope=1.0, intercept=-1024.0, frames=None, syntax=None, pixels=True):
    """A CT slice as pydicom writes it: int16 stored values, Hounsfield units = slope * stored + intercept."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.PixelSpacing = slope, intercept, [0.5, 0.5]
    if frames:
        ds.NumberOfFrames = frames
    if pixels:
        if syntax is not None and syntax.is_compressed:
            ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x01" * 64])
        else:
            ds.PixelData = stored.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_round_trip_hounsfield_window_and_resize(tmp_path):
    hu = np.full((32, 32), -1000.0)  # air
    hu[8:24, 8:24] = 0.0  # water
    hu[12:20, 12:20] = 500.0  # bone
    path = write_dicom(tmp_path / "scan.dcm", ((hu + 1024.0) / 2.0).round(), slope=2.0, intercept=-1024.0)
    from invprob.data.dicom import read_dicom

    dicom = read_dicom(path)
    np.testing.assert_allclose(dicom.hu, hu)
    assert dicom.pixel_spacing_mm == (0.5, 0.5)
    truth, label = load_phantom(path, (1, 32, 32))
    assert truth.shape == (1, 32, 32) and "scan.dcm" in label and "-1000..1000 HU" in label
    np.testing.assert_allclose(truth[0, 0, 0], -1.0)
    np.testing.assert_allclose(truth[0, 10, 10], 0.0, atol=1e-6)
    np.testing.assert_allclose(truth[0, 16, 16], 0.5, atol=1e-6)
    narrow, _ = load_phantom(path, (1, 32, 32), window=(-100.0, 100.0))
    assert float(narrow[0, 16, 16]) == 1.0 and float(narrow[0, 10, 10]) == pytest.approx(0.0, abs=1e-6)
    half, _ = load_phantom(path, (1, SIZE, SIZE))  # a factor 2: no warning
    assert half.shape == (1, SIZE, SIZE) and float(half.min()) >= -1 and float(half.max()) <= 1
    with pytest.warns(UserWarning, match="resized from 32x32 to the prior's 8x8"):
        load_phantom(path, (1, 8, 8))


def test_dicom_bad_files_give_one_line_errors(tmp_path, monkeypatch):
    pytest.importorskip("pydicom")
    from pydicom.uid import JPEG2000Lossless

    stored = np.zeros((2, 16, 16))
    cases = {
        "multi.dcm": (dict(frames=2), "multi-frame DICOM with 2 frames"),
        "report.dcm": (dict(pixels=False), "holds no image"),
        "compressed.dcm": (dict(syntax=JPEG2000Lossless), "cannot decode the pixel data"),
    }
    for name, (options, words) in cases.items():
        path = write_dicom(tmp_path / name, stored if "frames" in options else stored[0], **options)
        with pytest.raises(ValueError, match=words) as info:
            load_phantom(path, (1, SIZE, SIZE))
        assert "\n" not in str(info.value)
    (tmp_path / "text.dcm").write_text("not a DICOM file")
    with pytest.raises(ValueError, match="not a DICOM file"):
        load_phantom(tmp_path / "text.dcm", (1, SIZE, SIZE))
    wide = write_dicom(tmp_path / "wide.dcm", np.zeros((16, 32)))
    with pytest.raises(ValueError, match="square"):
        load_phantom(wide, (1, SIZE, SIZE))
    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)
    with pytest.raises(ImportError, match=r"invprob\[dicom\]"):
        load_phantom(wide, (1, SIZE, SIZE))


# --- the command line -----------------------------------------------------------------------------


def test_cli_uq_ct(tiny_prior, tmp_path, capsys):
    tiny_prior.save(str(tmp_path / "prior"))
    out = tmp_path / "out"
    common = ["uq-ct", "--prior", str(tmp_path / "prior"), "--angles", "30:150:9", "--n-samples", "10",
              "--levels", "0.5,0.8", "--map-opt", "iterations=2", "--sampler-opt", "steps=2",
              "--sampler-opt", "batch_size=2", "--out", str(out), "--quiet"]
    assert main([*common, "--phantom", "shepp-logan", "--eval-phantoms", "1", "--calibrate", "4"]) == 0
    printed = capsys.readouterr().out
    assert "raw coverage over 2 phantom(s)" in printed and "calibrated coverage over 2 phantom(s)" in printed
    assert "inside / outside the unmeasured wedge" in printed and "prior's reach" in printed
    assert f"figure: {out / FILES['figure']}" in printed and f"summary (JSON): {out / FILES['summary']}" in printed
    assert json.loads((out / FILES["summary"]).read_text())["phantom"] == "Shepp-Logan phantom"
    assert main([*common, "--phantom", "shepp-logan", "--eval-phantoms", "1", "--calibrate", "4"]) == 0
    assert "resumed 6 finished stage(s)" in capsys.readouterr().out
    assert main([*common, "--calibrate", str(out / FILES["calibrator"]), "--out", str(tmp_path / "again")]) == 0
    assert "calibrated coverage over 1 phantom(s)" in capsys.readouterr().out
    assert main([*common, "--calibrate", str(out / FILES["calibrator"]), "--residual", "none",
                 "--out", str(tmp_path / "none")]) == 1  # a calibrator of widened samples, applied to range samples
    err = capsys.readouterr().err
    assert "fitted on samples drawn differently (residual: fitted with '" in err and "this run None" in err
    assert main([*common, "--calibrate", str(out / FILES["calibrator"]), "--sampler-opt", "start=prior",
                 "--out", str(tmp_path / "cold")]) == 1  # SVI started at the MAP, applied to SVI from the prior
    assert "sampler_options: fitted with " in capsys.readouterr().err
    assert main([*common, "--calibrate", str(out / FILES["calibrator"]), "--map-opt", "start_tv=8",
                 "--out", str(tmp_path / "tv8")]) == 1  # another MAP, so other starts of the sampler
    assert "map: fitted with " in capsys.readouterr().err
    assert main([*common, "--residual", "none", "--out", str(tmp_path / "none")]) == 0
    assert json.loads((tmp_path / "none" / FILES["summary"]).read_text())["residual_model"] is None
    for bad, words in ((["--snr", "-3"], "snr_db"), (["--angles", "10,200"], "[0, 180)"),
                       (["--levels", "0.5,abc"], "levels"), (["--calibrate", "2"], "at least 4")):
        assert main([*common, *bad]) == 1
        err = capsys.readouterr().err
        assert err.startswith("invprob: error: ") and words in err and err.count("\n") == 1, err


def test_a_calibration_file_without_a_context_is_applied_with_a_warning(tiny_prior, tmp_path):
    g = gen(70)
    truths = torch.rand(4, 1, SIZE, SIZE, generator=g)
    old = uq.ConformalCalibrator.fit(truths[:, None] + 0.1 * torch.randn(4, 10, 1, SIZE, SIZE, generator=g), truths,
                                     (0.5, 0.8))
    assert old.context is None
    path = old.save(tmp_path / "old.json")
    with pytest.warns(UserWarning, match="records no sampling settings"):
        result = ct_workflow("ellipses:2", out=tmp_path / "out", prior=tiny_prior, calibrate=str(path), **FAST)
    assert result.summary["coverage"]["calibrated"] is not None
    assert uq.ConformalCalibrator.load(result.files["calibrator"]).context is None


def test_cli_uq_ct_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["uq-ct", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    from invprob.apps.ct_uq.workflow import RESIDUAL_IMAGES

    assert f"fitted on {RESIDUAL_IMAGES} training ellipses" in " ".join(text.split())
    for option in ("--phantom", "--measurement", "--sigma", "--prior", "--angles", "--snr", "--sampler",
                   "--n-samples", "--eval-phantoms", "--calibrate", "--levels", "--window-low", "--map-opt", "--residual",
                   "--sampler-opt", "--seed", "--out"):
        assert option in text


def test_model_error_sigma_measures_what_the_prior_cannot_represent(tmp_path, monkeypatch):
    from invprob.apps.ct_uq.reconstruction import effective_sigma, model_error_sigma

    prior = LinearGaussianPrior(0.3 * torch.randn(SIZE * SIZE, 4, generator=gen(50)), data_shape=(1, SIZE, SIZE))
    op = LimitedAngleCT((1, SIZE, SIZE), ANGLES)
    on_range = prior.sample(6, generator=gen(51))
    assert model_error_sigma(op, prior, on_range) < 1e-4  # the prior represents its own samples exactly
    off = on_range + 0.2 * torch.randn(on_range.shape, generator=gen(52))
    residual = op(off - prior.project(off))
    expected = float(residual.pow(2).mean().sqrt())
    assert model_error_sigma(op, prior, off) == pytest.approx(expected, rel=1e-4)
    assert effective_sigma(0.3, 0.4) == pytest.approx(0.5) and effective_sigma(0.3, None) == 0.3
    from invprob.apps.ct_uq import reconstruction as module

    seen = {}
    real = module.solve

    def spy(op_, prior_, y_, method, **options):
        seen[method] = options.get("sigma")  # None for the TV start
        return real(op_, prior_, y_, method, **options)

    monkeypatch.setattr(module, "solve", spy)
    run = dict(prior=prior, angles=ANGLES, sampler="langevin", n_samples=10, levels=(0.5,), map_options={"iterations": 2},
               sampler_options={"n_chains": 2, "burn_in": 2, "thin": 1, "step_size": 1e-3}, residual=None)
    result = ct_workflow(on_range[0], out=tmp_path / "wider", model_error=0.5, **run)
    sigma = result.reconstruction.sigma  # the measurement's own noise std is kept and reported
    assert result.summary["model_error_sigma"] == 0.5 and result.summary["sigma"] == sigma
    assert seen == {"tv": None, "iflow-l": pytest.approx(effective_sigma(sigma, 0.5)),
                    "langevin": pytest.approx(effective_sigma(sigma, 0.5))}
    with pytest.raises(ValueError, match="model_error"):
        ct_workflow(on_range[0], out=tmp_path / "bad", model_error="big", **run)


def test_maps_figure_hatches_the_unmeasured_wedge_where_the_fourier_slice_theorem_puts_it():
    """Default scan (30-150°): the unmeasured directions are those within 30° of the k_x axis."""
    import matplotlib.pyplot as plt

    from invprob.apps.ct_uq.figures import _mark_wedges, spectrum_extent

    fig, ax = plt.subplots()
    _mark_wedges(ax, 64, uq.missing_wedges(default_angles()))
    patches = [p.get_patch_transform().transform_path(p.get_path()) for p in ax.patches]
    plt.close(fig)
    inside = lambda point: any(path.contains_point(point) for path in patches)  # noqa: E731
    assert inside((20.0, 0.0)) and inside((-20.0, 3.0)) and inside((20.0, 10.0))  # 26.6° from k_x
    assert not inside((0.0, 20.0)) and not inside((10.0, 10.0)) and not inside((-10.0, -10.0))
    assert spectrum_extent(64) == (-32.5, 31.5, -31.5, 32.5)


def test_figure_title_names_angles_wedge_snr_mad_and_the_reach_flag():
    from invprob.apps.ct_uq.workflow import _title

    summary = {"angle_range_deg": [30.0, 150.0], "missing_wedges_deg": [[150.0, 30.0]], "snr_db": 30.0,
               "angles_deg": list(default_angles()), "sampler": "svi", "n_samples": 64,
               "reach": {"out_of_reach": False, "reason": "fine"}, "residual_model": None}
    title = _title(summary, "phantom")
    for words in ("30 angles in [30°, 150°]", "unmeasured wedge 150°–30°", "30 dB SNR", "MAD = mean absolute deviation"):
        assert words in title
    assert "REACH" not in title and "residual" not in title
    summary["residual_model"] = {"source": "fitted on 256 training ellipses"}
    assert "svi (64 samples) + Gaussian off-range residual (fitted on 256 training ellipses)" in _title(summary, "phantom")
    summary["residual_model"]["model"] = "EdgeAdaptiveResidual"
    assert "+ edge-adaptive Gaussian off-range residual (fitted on" in _title(summary, "phantom")
    summary["reach"] = {"out_of_reach": True, "reason": "chi2/m = 40"}
    assert "OUT OF THE PRIOR'S REACH: chi2/m = 40" in _title(summary, "phantom")


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_works(tmp_path):
    from invprob.apps.ct_uq.outputs import StageStore

    prior = LinearGaussianPrior(0.3 * torch.randn(SIZE * SIZE, 4, generator=gen(60)), data_shape=(1, SIZE, SIZE))
    run = dict(prior=prior, angles=ANGLES, sampler="langevin", n_samples=10, levels=(0.5,), map_options={"iterations": 2},
               sampler_options={"n_chains": 2, "burn_in": 2, "thin": 1, "step_size": 1e-3})
    with StageStore(tmp_path, {"a": 1}):
        with pytest.raises(RuntimeError, match="another uq-ct run is using"):
            ct_workflow("ellipses:1", out=tmp_path, **run)
    assert ct_workflow("ellipses:1", out=tmp_path, **run).files["summary"].is_file()  # released: runs


def test_the_map_starts_at_the_projection_of_a_tv_reconstruction(tiny_prior):
    op = LimitedAngleCT((1, SIZE, SIZE), ANGLES)
    truth = load_dataset("ellipses", split="test", size=SIZE)[0][None].to(tiny_prior.dtype)
    y = op(truth) + 0.05 * torch.randn(op(truth).shape, generator=torch.Generator().manual_seed(0))
    start = map_start(op, tiny_prior, y, sigma=0.05, beta=4.0)
    x_tv = solve(op, None, y, "tv", lam=4.0 * 0.05**2).x_hat.clamp(-1, 1)
    torch.testing.assert_close(start, tiny_prior.project(x_tv).clamp(-1, 1))
    options = {"iterations": 3}
    x_map, seconds = map_estimate(op, tiny_prior, y, 0.05, options, torch.Generator().manual_seed(1))
    direct = solve(op, tiny_prior, y, "iflow-l", sigma=0.05, x_init=start, generator=torch.Generator().manual_seed(1),
                   **{"tol": 1e-4, "window": 25, **options})
    torch.testing.assert_close(x_map, direct.x_hat[0])
    assert seconds > direct.seconds * 0.5
    own, _ = map_estimate(op, tiny_prior, y, 0.05, {**options, "start": "prior-mean"}, torch.Generator().manual_seed(1))
    assert not torch.allclose(own, x_map)  # "start" in map_options: iFlow-L's own start, no TV
    with pytest.raises(ValueError, match="start_tv"):
        map_estimate(op, tiny_prior, y, 0.05, {**options, "start_tv": -1.0}, None)
