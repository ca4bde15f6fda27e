"""The evaluation and calibration sets of the CT workflow: their reconstructions, coverage and calibrator.

Each phantom of a set is measured with its own seed and reconstructed without the MAP (only the
posterior samples matter here); each finished reconstruction is a resumable stage
(:class:`~invprob.apps.ct_uq.outputs.StageStore`). Raw coverage is that of the empirical central
credible intervals (:func:`invprob.uq.coverage`), calibrated coverage that of the conformal
intervals of a :class:`invprob.uq.ConformalCalibrator` fitted on the calibration set, never on
the phantoms it is evaluated on.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ... import uq
from ...operators.ct import LimitedAngleCT
from ...priors.base import Prior
from ...progress import Progress
from .maps import misfit
from .outputs import StageStore
from .reconstruction import Reconstruction, measure, reconstruct


def run_stage(
    store: StageStore,
    name: str,
    prior: Prior,
    compute,
) -> Reconstruction:
    """The reconstruction of stage ``name``: loaded when finished before, else ``compute()`` and saved."""
    if store.has(name):
        return Reconstruction.from_arrays(store.load(name), prior.device, prior.dtype)
    rec = compute()
    store.save(name, rec.to_arrays())
    return rec


def run_set(
    op: LimitedAngleCT,
    prior: Prior,
    images: torch.Tensor,
    labels: Sequence[str],
    *,
    prefix: str,
    seed: int,
    snr_db: float,
    sampler: str,
    n_samples: int,
    sampler_options: dict[str, Any] | None,
    map_options: dict[str, Any] | None,
    model_error: float | None,
    residual: uq.GaussianResidual | None,
    store: StageStore,
    bar: Progress,
) -> list[Reconstruction]:
    """Measure and sample every image of a set (phantom ``i`` seeded with ``seed + i``), one stage each."""
    out = []
    for i, (image, label) in enumerate(zip(images, labels)):
        truth = image.to(device=prior.device, dtype=prior.dtype)

        def compute(truth: torch.Tensor = truth, i: int = i) -> Reconstruction:
            generator = torch.Generator().manual_seed(seed + i)
            y, noise = measure(op, truth, snr_db, generator)
            return reconstruct(op, prior, y, noise, truth=truth, sampler=sampler, n_samples=n_samples,
                               sampler_options=sampler_options, map_options=map_options, with_map=False,
                               model_error=model_error,
                               residual=residual, generator=generator)

        out.append(run_stage(store, f"{prefix}-{i:03d}", prior, compute))
        bar.update(stage=f"{prefix} {i + 1}/{len(labels)}")
    return out


def coverage_report(
    recs: Sequence[Reconstruction],
    names: Sequence[str],
    levels: Sequence[float],
    calibrator: uq.ConformalCalibrator | None = None,
) -> dict[str, Any] | None:
    """Raw (and calibrated) coverage and mean interval width pooled over ``recs`` with a known truth; None if none."""
    pairs = [(r, n) for r, n in zip(recs, names) if r.truth is not None]
    if not pairs:
        return None
    samples = torch.stack([r.samples for r, _ in pairs])
    truths = torch.stack([r.truth for r, _ in pairs])
    report: dict[str, Any] = {
        "levels": list(levels),
        "raw": uq.coverage(samples, truths, levels, dim=1).tolist(),
        "raw_width": uq.interval_width(samples, levels, dim=1).tolist(),
        "calibrated": None,
        "calibrated_width": None,
        "per_phantom_raw": [uq.coverage(r.samples, r.truth, levels).tolist() for r, _ in pairs],
        "phantoms": [n for _, n in pairs],
        "n_pixels": int(truths.numel()),
    }
    if calibrator is not None:
        by_level = dict(zip(calibrator.levels, range(len(calibrator.levels))))
        cov = calibrator.coverage(samples, truths, dim=1).tolist()
        width = calibrator.width(samples, dim=1).tolist()
        report["calibrated"] = [cov[by_level[level]] if level in by_level else None for level in levels]
        report["calibrated_width"] = [width[by_level[level]] if level in by_level else None for level in levels]
    return report


def fit_calibrator(
    op: LimitedAngleCT, recs: Sequence[Reconstruction], levels: Sequence[float], context: dict[str, Any],
    residual: uq.GaussianResidual | None = None,
) -> uq.ConformalCalibrator:
    """Fit the conformal scales on the calibration reconstructions, storing their data misfits for the reach
    check and the sampling ``context`` (:func:`check_context` compares it when the file is reused)."""
    samples = torch.stack([r.samples for r in recs])
    truths = torch.stack([r.truth for r in recs])
    misfits = [misfit(op, r, residual).reduced for r in recs]
    return uq.ConformalCalibrator.fit(samples, truths, levels, misfit=misfits, context=context)


def check_context(calibrator: uq.ConformalCalibrator, context: dict[str, Any]) -> None:
    """Refuse a loaded calibrator fitted on samples drawn otherwise than this run's (prior, sampler, options,
    residual model, model error); warn when the file records no context (written before it was recorded)."""
    if calibrator.context is None:
        warnings.warn("calibrate: the calibration file records no sampling settings, so it cannot be checked "
                      "against this run's prior, sampler and residual model", UserWarning, stacklevel=3)
        return
    current = json.loads(json.dumps(context))
    differ = sorted(k for k in current.keys() | calibrator.context.keys()
                    if current.get(k) != calibrator.context.get(k))
    if differ:
        details = "; ".join(f"{k}: fitted with {calibrator.context.get(k)!r}, this run {current.get(k)!r}"
                            for k in differ)
        raise ValueError(f"calibrate: the calibrator was fitted on samples drawn differently ({details}); "
                         "refit it with --calibrate K under this run's settings")
