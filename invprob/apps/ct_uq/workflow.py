"""Limited-angle CT with calibrated uncertainty in one call: :func:`ct_workflow`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import uq
from ..._checks import check_float
from ...data.dicom import DEFAULT_WINDOW
from ...operators.ct import LimitedAngleCT, check_angles, default_angles
from ...priors.base import Prior
from ...progress import progress as progress_bar
from .calibrate import check_context, coverage_report, fit_calibrator, run_set, run_stage
from .figures import reliability_plot, uncertainty_figure
from .maps import misfit, quality, uq_maps, wedge_ratio
from .outputs import FILES, StageStore, prior_digest, write_json, write_npz
from .phantoms import calibration_phantoms, ellipse_index, evaluation_phantoms, load_phantom
from .reconstruction import (
    Reconstruction,
    ct_shape,
    load_ct_prior,
    load_measurement,
    measure,
    model_error_sigma,
    reconstruct,
)
from .settings import (
    DEFAULT_LEVELS,
    DEFAULT_PRIOR,
    MAP_DEFAULTS,
    MAP_METHOD,
    check_settings,
    resolved_sampler_options,
)

SUMMARY_KEYS = (
    "phantom", "prior", "image_shape", "angles_deg", "angle_range_deg", "missing_wedges_deg", "snr_db", "sigma",
    "model_error_sigma", "residual_model", "sampler", "n_samples", "seed", "metrics", "wedge_energy_ratio", "reach", "coverage",
    "calibration", "seconds", "resumed_stages", "files",
)
MODEL_ERROR_IMAGES = 32
"""Training ellipses from which ``model_error="auto"`` estimates the model-error std."""
RESIDUAL_IMAGES = 256
"""Training ellipses on which ``residual="ellipses"`` (or ``"ellipses-pixel"``) fits the off-range residual's moments."""
RESIDUAL_MODELS = {"ellipses": uq.EdgeAdaptiveResidual, "ellipses-pixel": uq.GaussianResidual}
"""The residual models fitted on training ellipses, by name: moments per edge-strength bin (default) or per pixel."""
CALIBRATION_SEED_OFFSET = 10_000
"""Calibration phantom ``j`` is measured and sampled with seed ``seed + 10000 + j``."""


@dataclass
class CTUQResult:
    """What :func:`ct_workflow` returns: the maps, the JSON summary, the files written, the reconstruction."""

    maps: dict[str, np.ndarray]
    summary: dict[str, Any]
    files: dict[str, Path]
    reconstruction: Reconstruction
    calibrator: uq.ConformalCalibrator | None


def ct_workflow(
    phantom: str | Path | torch.Tensor | np.ndarray | None = None,
    *,
    measurement: str | Path | torch.Tensor | np.ndarray | None = None,
    sigma: float | None = None,
    out: str | Path = "runs/uq-ct",
    prior: str | Path | Prior = DEFAULT_PRIOR,
    angles: Sequence[float] | np.ndarray | None = None,
    snr_db: float = 30.0,
    sampler: str = "svi",
    n_samples: int = 64,
    evaluation: int | torch.Tensor | np.ndarray = 0,
    calibrate: int | str | Path | torch.Tensor | np.ndarray | uq.ConformalCalibrator | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    map_options: dict[str, Any] | None = None,
    sampler_options: dict[str, Any] | None = None,
    window: tuple[float, float] = DEFAULT_WINDOW,
    model_error: float | str | None = None,
    residual: str | torch.Tensor | uq.GaussianResidual | None = "ellipses",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> CTUQResult:
    """Limited-angle CT reconstruction with posterior uncertainty maps, calibrated intervals and a reach check.

    The phantom is measured with :class:`~invprob.operators.LimitedAngleCT` at ``snr_db`` (or a
    measured sinogram is given), reconstructed by FBP and the MAP (iFlow-L started at the prior's projection of a TV reconstruction), and sampled from the
    posterior with ``sampler``, each sample plus a draw of the prior's off-range residual
    (``residual``). Coverage of the pixel-wise central credible intervals is measured on the
    evaluation set (the phantom, when its truth is known, and ``evaluation`` more phantoms); with
    ``calibrate``, a :class:`invprob.uq.ConformalCalibrator` fitted on phantoms disjoint from the
    evaluation set (or loaded, and refused if its samples were drawn otherwise) rescales the
    intervals, and both raw and calibrated coverage are reported. The chi-square misfit of the
    posterior mean on the prior's range (:func:`invprob.uq.reach_check`, against the calibration
    set's when there is one) flags an input out of the prior's reach; the
    calibrated intervals are not claimed to hold for it. Every finished reconstruction is written
    at once to ``out/stages``: a rerun with the same settings resumes instead of recomputing.

    Args:
        phantom: the ground truth to measure (:func:`~invprob.apps.ct_uq.phantoms.load_phantom`:
            ``"ellipses:K"``, ``"shepp-logan"``, a picture, ``.npy``, DICOM, tensor); default ``"ellipses:0"``.
        measurement, sigma: instead of a phantom, a sinogram ``(C, n_angles, N)`` (tensor, array or
            ``.npy``) and its noise std; no truth is then known (no metrics, no error map).
        out: output folder (files of :data:`~invprob.apps.ct_uq.outputs.FILES`, and ``stages/``).
        prior: shipped prior name, checkpoint directory or :class:`~invprob.priors.Prior` of ``(C, N, N)``.
        angles: degrees, each in ``[0, 180)`` (default 30 in ``[30°, 150°]``).
        snr_db: SNR of the simulated noise (> 0), for every simulated phantom.
        sampler: ``"svi"``, ``"langevin"`` (MALA) or ``"pl-mcmc"``; ``n_samples`` per measurement
            (at least :func:`invprob.uq.min_samples_for_level` of the highest level).
        evaluation: more ellipse test phantoms (an int, the first ones other than the phantom) or
            images ``(K, C, N, N)`` on which coverage is measured.
        calibrate: ``K`` calibration ellipses (test-stream indices 100+, never evaluated), images
            ``(K, C, N, N)``, a saved calibrator file, or a calibrator; None or 0: none.
        levels: nominal levels of the intervals.
        map_options, sampler_options: options of the MAP (``iflow-l`` over :data:`~invprob.apps.ct_uq.settings.MAP_OPTIONS`) and of the sampler.
        window: Hounsfield window mapped onto ``[-1, 1]`` for a DICOM phantom.
        model_error: std ``tau`` of the prior's model error added to the likelihood's noise
            (``sqrt(sigma^2 + tau^2)``, :func:`~invprob.apps.ct_uq.reconstruction.model_error_sigma`);
            ``"auto"``: estimated from :data:`MODEL_ERROR_IMAGES` training ellipses; None: none.
        residual: the prior's off-range error as a Gaussian: ``"ellipses"`` (default) an
            :class:`invprob.uq.EdgeAdaptiveResidual` (moments per bin of the range image's edge
            strength) fitted on :data:`RESIDUAL_IMAGES` training ellipses, ``"ellipses-pixel"`` a
            pixel-wise :class:`invprob.uq.GaussianResidual` fitted on them, images ``(K, C, N, N)``
            to fit an edge-adaptive one on, a fitted model, or None (samples stay on the prior's range).
            Each sample ``v`` becomes ``v + r``, ``r`` drawn given ``v`` and the measurement, and the
            MAP gets its conditional mean; the intervals widen by the off-range spread of the
            training images where the scan does not pin ``r`` down.
        seed: phantom ``seed``; evaluation phantom ``i``: ``seed + 1 + i``; calibration phantom
            ``j``: ``seed + 10000 + j``.
        device: torch device of a prior loaded by name.
        progress: progress on stderr, one step per reconstruction.

    Returns:
        :class:`CTUQResult`; ``summary`` (also ``summary.json``) has the keys of :data:`SUMMARY_KEYS`.

    Raises:
        ValueError: bad angles, image shape, SNR, levels, sample count, options, or a calibration
            set too small for the highest level (:func:`invprob.uq.min_calibration_phantoms`).

    Example:
        >>> import tempfile
        >>> from invprob.priors import LinearGaussianPrior
        >>> prior = LinearGaussianPrior(0.3 * torch.randn(256, 4, generator=torch.Generator().manual_seed(0)),
        ...                             data_shape=(1, 16, 16))
        >>> result = ct_workflow(prior.sample(1, generator=torch.Generator().manual_seed(1))[0], prior=prior,
        ...                      out=tempfile.mkdtemp(), angles=[30.0, 60.0, 90.0, 120.0, 150.0], sampler="langevin",
        ...                      n_samples=10, levels=(0.5, 0.8), calibrate=4, map_options={"iterations": 5},
        ...                      sampler_options={"n_chains": 2, "burn_in": 20, "thin": 1, "step_size": 1e-3})
        >>> sorted(result.files)
        ['calibrator', 'figure', 'maps', 'reliability', 'summary']
        >>> result.summary["missing_wedges_deg"], result.summary["coverage"]["levels"], len(result.calibrator.scales)
        ([[150.0, 30.0]], [0.5, 0.8], 2)
    """
    angles_t = check_angles(default_angles() if angles is None else angles)
    levels_t = check_settings(snr_db, sampler, n_samples, levels)
    if measurement is not None and phantom is not None:
        raise ValueError("phantom: give either a phantom to simulate or a measurement, not both")
    source = "ellipses:0" if phantom is None and measurement is None else phantom
    model = load_ct_prior(prior, device)
    shape = ct_shape(model)
    op = LimitedAngleCT(shape, angles_t).to(device=model.device)
    eval_images, eval_labels = evaluation_phantoms(evaluation, shape, ellipse_index(source))
    loaded, cal_images, cal_labels = _calibration_source(calibrate, shape, levels_t)
    if source is not None:
        truth, label = load_phantom(source, shape, window=window)
        truth = truth.to(device=model.device, dtype=model.dtype)
    else:
        truth, label = None, "given measurement"
        y_given, sigma_given = load_measurement(measurement, sigma, op, model)
    if model_error is not None and residual is not None:
        raise ValueError("model_error: the model-error std and the residual model both account for the prior's "
                         "off-range error; give one of them (residual=None, or --residual none, to use model_error)")
    tau = _model_error(model_error, op, model, shape)
    residual_model = _residual_model(residual, model, shape)
    residual_info = None if residual_model is None else {
        "model": type(residual_model).__name__, "n_images": residual_model.n_images, "rms": residual_model.rms,
        "digest": residual_model.digest(), "source": _residual_source(residual, residual_model.n_images)}
    digest = prior_digest(model)
    resolved = resolved_sampler_options(sampler, n_samples, sampler_options)
    context = {"prior": digest, "sampler": sampler, "sampler_options": resolved,
               "residual": None if residual_model is None else residual_info["digest"], "model_error": tau}
    if resolved.get("start") == "x_init":  # the sampler starts at the MAP: its settings shape the samples
        context["map"] = {**MAP_DEFAULTS, "user": map_options or {}}
    if loaded is not None:
        check_context(loaded, context)
    out = Path(out)
    store = StageStore(out, {"model_error": tau, "residual": residual_info,
        "phantom": label, "truth_sum": None if truth is None else float(truth.double().sum()),
        "measurement_sum": None if truth is not None else float(y_given.double().sum()),
        "prior": digest, "angles": list(angles_t), "snr_db": float(snr_db), "sampler": sampler,
        "n_samples": n_samples, "map_options": map_options, "sampler_options": resolved, "seed": seed,
        "map_defaults": MAP_DEFAULTS,
    })

    with store:
        def compute_main() -> Reconstruction:
            generator = torch.Generator().manual_seed(seed)
            if truth is not None:
                y, noise = measure(op, truth, snr_db, generator)
            else:
                y, noise = y_given, sigma_given
            return reconstruct(op, model, y, noise, truth=truth, sampler=sampler, n_samples=n_samples,
                               map_options=map_options, sampler_options=sampler_options, model_error=tau,
                               residual=residual_model, generator=generator)

        total = 1 + len(eval_labels) + len(cal_labels)
        with progress_bar(total, "uq-ct", enabled=progress) as bar:
            bar.write(f"uq-ct: {label}: MAP by {MAP_METHOD}, {n_samples} posterior samples by {sampler}; "
                      f"{len(eval_labels)} more evaluation and {len(cal_labels)} calibration phantom(s)")
            rec = run_stage(store, "phantom", model, compute_main)
            bar.update(stage="phantom")
            common = dict(snr_db=snr_db, sampler=sampler, n_samples=n_samples, sampler_options=sampler_options,
                          map_options=map_options, model_error=tau, residual=residual_model, store=store, bar=bar)
            evals = run_set(op, model, eval_images, eval_labels, prefix="evaluation", seed=seed + 1, **common)
            start = time.perf_counter()
            cals = run_set(op, model, cal_images, cal_labels, prefix="calibration", seed=seed + CALIBRATION_SEED_OFFSET,
                           **common)
            calibrator = loaded if loaded is not None else (fit_calibrator(op, cals, levels_t, context, residual_model)
                                                           if cals else None)
            seconds_cal = time.perf_counter() - start
        reach = uq.reach_check(misfit(op, rec, residual_model), reference=None if calibrator is None else calibrator.misfit)
        coverage = coverage_report([rec, *evals], ["phantom", *eval_labels], levels_t, calibrator)
        summary = {
            "phantom": label,
            "prior": str(prior) if not isinstance(prior, Prior) else type(prior).__name__,
            "image_shape": list(shape),
            "angles_deg": list(angles_t),
            "angle_range_deg": [min(angles_t), max(angles_t)],
            "missing_wedges_deg": [list(w) for w in uq.missing_wedges(angles_t)],
            "snr_db": None if source is None else float(snr_db),
            "sigma": rec.sigma,
            "model_error_sigma": tau,
            "residual_model": residual_info,
            "sampler": sampler,
            "n_samples": int(rec.samples.shape[0]),
            "seed": seed,
            "metrics": quality(rec),
            "wedge_energy_ratio": wedge_ratio(rec.samples, angles_t),
            "reach": reach.to_dict(),
            "coverage": coverage,
            "calibration": _calibration_summary(calibrator, cal_labels, reach),
            "seconds": {
                "map": rec.seconds_map,
                "sampler": rec.seconds_sampler,
                "per_sample": rec.seconds_sampler / rec.samples.shape[0],
                "calibration": seconds_cal,
            },
            "resumed_stages": list(store.resumed),
        }
        maps = uq_maps(rec, angles_t, calibrator)
        files = _write_outputs(out, maps, summary, calibrator, label)
    return CTUQResult(maps, summary, files, rec, calibrator)


def _model_error(model_error: float | str | None, op: LimitedAngleCT, prior: Prior,
                 shape: tuple[int, int, int]) -> float | None:
    if model_error is None:
        return None
    if model_error == "auto":
        return model_error_sigma(op, prior, _training_ellipses(MODEL_ERROR_IMAGES, shape))
    if isinstance(model_error, str):
        raise ValueError(f"model_error: expected a std >= 0, 'auto' or None, got {model_error!r}")
    return check_float(model_error, "model_error", minimum=0)


def _training_ellipses(n: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """The first ``n`` training ellipses at the prior's size, ``(n, 1, N, N)``."""
    from ...data import load_dataset

    data = load_dataset("ellipses", split="train", size=shape[-1])
    return torch.stack([data[i] for i in range(n)])


def _residual_model(residual: str | torch.Tensor | uq.GaussianResidual | None, prior: Prior,
                    shape: tuple[int, int, int]) -> uq.GaussianResidual | None:
    if residual is None:
        return None
    if isinstance(residual, uq.GaussianResidual):
        if tuple(residual.mean.shape) != shape:
            raise ValueError(f"residual: expected a model of images {shape}, got one of {tuple(residual.mean.shape)}")
        return residual
    model = uq.EdgeAdaptiveResidual
    if isinstance(residual, str):
        if residual not in RESIDUAL_MODELS:
            raise ValueError(f"residual: expected one of {sorted(RESIDUAL_MODELS)}, training images (K, C, N, N), "
                             f"a GaussianResidual or None, got {residual!r}")
        model, residual = RESIDUAL_MODELS[residual], _training_ellipses(RESIDUAL_IMAGES, shape)
    if not isinstance(residual, torch.Tensor) or tuple(residual.shape[1:]) != shape:
        got = tuple(residual.shape) if isinstance(residual, torch.Tensor) else type(residual).__name__
        raise ValueError(f"residual: expected training images of shape (K, {', '.join(map(str, shape))}), got {got}")
    return model.fit(prior, residual)


def _calibration_source(calibrate: Any, shape: tuple[int, int, int], levels: tuple[float, ...]):
    """``(loaded calibrator or None, calibration images, labels)``; checks the set's size before any work."""
    if calibrate is None:
        return None, torch.zeros(0, *shape), []
    if isinstance(calibrate, uq.ConformalCalibrator):
        return calibrate, torch.zeros(0, *shape), []
    if isinstance(calibrate, (str, Path)):
        return uq.ConformalCalibrator.load(calibrate), torch.zeros(0, *shape), []
    images, labels = calibration_phantoms(calibrate, shape)
    if labels:
        needed = uq.min_calibration_phantoms(max(levels))
        if len(labels) < needed:
            raise ValueError(
                f"calibrate: {len(labels)} phantom(s) cannot calibrate a {max(levels):.0%} interval "
                f"(K phantoms support levels up to K/(K+1)); use at least {needed} or lower the levels"
            )
    return None, images, labels


def _calibration_summary(calibrator: uq.ConformalCalibrator | None, labels: list[str], reach: uq.ReachCheck):
    if calibrator is None:
        return None
    holds = not reach.out_of_reach
    return {
        "levels": list(calibrator.levels),
        "scales": list(calibrator.scales),
        "correction": calibrator.correction,
        "n_phantoms": calibrator.n_phantoms,
        "phantoms": labels or None,
        "fitted_here": bool(labels),
        "claimed_for_this_input": holds,
        "note": ("marginal coverage >= level over pixels and phantoms exchangeable with the calibration set"
                 if holds else "the input is out of the prior's reach: the calibrated intervals are not claimed to hold"),
    }


def _title(summary: dict[str, Any], label: str) -> str:
    low, high = summary["angle_range_deg"]
    wedges = ", ".join(f"{a:g}°–{b:g}°" for a, b in summary["missing_wedges_deg"]) or "none"
    snr = "given sinogram" if summary["snr_db"] is None else f"{summary['snr_db']:g} dB SNR"
    lines = [
        f"{label}: limited-angle CT, {len(summary['angles_deg'])} angles in [{low:g}°, {high:g}°] "
        f"(unmeasured wedge {wedges}), {snr}",
        f"posterior by {summary['sampler']} ({summary['n_samples']} samples){_residual_note(summary)}; "
        "MAD = mean absolute deviation E|X - <X>| of the samples about their mean",
    ]
    reach = summary["reach"]
    if reach["out_of_reach"]:
        lines.append(f"OUT OF THE PRIOR'S REACH: {reach['reason']} — intervals not trustworthy")
    return "\n".join(lines)


def _residual_source(residual: object, n_images: int) -> str:
    if isinstance(residual, str):
        return f"fitted on {n_images} training ellipses"
    if isinstance(residual, torch.Tensor):
        return f"fitted on the {n_images} images given as residual"
    return f"a {type(residual).__name__} given as residual, fitted on {n_images} images"


def _residual_note(summary: dict[str, Any]) -> str:
    info = summary["residual_model"]
    if info is None:
        return ""
    kind = "edge-adaptive " if info.get("model") == "EdgeAdaptiveResidual" else ""
    return f" + {kind}Gaussian off-range residual ({info['source']})"


def _write_outputs(
    out: Path, maps: dict[str, np.ndarray], summary: dict[str, Any], calibrator: uq.ConformalCalibrator | None,
    label: str,
) -> dict[str, Path]:
    files = {key: out / name for key, name in FILES.items()}
    write_npz(files["maps"], maps)
    metrics = summary["metrics"] or {}

    def titled(name: str, key: str) -> str:
        if key not in metrics:
            return name
        return f"{name}\nSNR {metrics[key]['snr_db']:.1f} dB, PSNR {metrics[key]['psnr_db']:.1f} dB"

    images = {"truth": maps.get("truth"), "fbp": maps["fbp"], "map": maps.get("map"), "mean": maps["mean"]}
    titles = {"truth": "truth", "fbp": titled("FBP", "fbp"), "map": titled(f"MAP ({MAP_METHOD})", "map"),
              "mean": titled("posterior mean", "mean")}
    spreads = {
        "posterior std": (maps["std"], "std (image units)"),
        "MAD E|X - <X>|": (maps["mad_p1"], "mean abs. deviation (image units)"),
        "variance E|X - <X>|^2": (maps["mad_p2"], "variance (image units^2)"),
    }
    if "abs_error" in maps:
        spreads["|posterior mean - truth|"] = (maps["abs_error"], "absolute error (image units)")
    uncertainty_figure({k: v for k, v in images.items() if v is not None}, titles, spreads, maps["fourier_mad_log10"],
                       files["figure"], wedges=[tuple(w) for w in summary["missing_wedges_deg"]],
                       title=_title(summary, label))
    coverage = summary["coverage"]
    if coverage is None:
        del files["reliability"]
    else:
        n = len(coverage["phantoms"])
        curves = {f"raw central intervals ({summary['sampler']}, {n} phantom(s))": coverage["raw"]}
        if coverage["calibrated"] is not None:
            curves[f"calibrated (conformal, K = {calibrator.n_phantoms})"] = [
                float("nan") if c is None else c for c in coverage["calibrated"]]
        reliability_plot(coverage["levels"], curves, files["reliability"],
                         title=f"{label}\ncoverage of pixel-wise intervals, {n} evaluation phantom(s)")
    if calibrator is None:
        del files["calibrator"]
    else:
        calibrator.save(files["calibrator"])
    summary["files"] = {key: str(path) for key, path in files.items()}
    write_json(files["summary"], summary)
    return files
