"""Quality metrics, uncertainty maps and the reach check of one reconstruction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ... import uq
from ...metrics import psnr, snr, ssim
from ...operators.ct import LimitedAngleCT
from .reconstruction import Reconstruction
from .settings import DATA_RANGE

MAP_KEYS = (
    "truth", "fbp", "map", "mean", "std", "mad_p1", "mad_p2", "abs_error", "fourier_mad", "fourier_mad_log10",
    "wedge_mask", "samples", "measurement", "angles", "calibrated_levels", "calibrated_lo", "calibrated_hi",
)
"""Every array ``maps.npz`` can hold: ``truth`` and ``abs_error`` only with a known truth, the
``calibrated_*`` ones only with a calibrator (bounds ``(L, C, N, N)``, one per level)."""


def quality(rec: Reconstruction) -> dict[str, dict[str, float]] | None:
    """SNR (dB), PSNR (dB, data range 2) and SSIM of FBP, MAP and posterior mean; None without a truth."""
    if rec.truth is None:
        return None
    estimates = {"fbp": rec.fbp, "map": rec.map, "mean": rec.mean}
    truth = rec.truth.unsqueeze(0)
    out: dict[str, dict[str, float]] = {}
    for name, x in estimates.items():
        if x is None:
            continue
        x = x.unsqueeze(0)
        out[name] = {
            "snr_db": float(snr(truth, x)[0]),
            "psnr_db": float(psnr(truth, x, data_range=DATA_RANGE)[0]),
            "ssim": float(ssim(truth, x, data_range=DATA_RANGE)[0]),
        }
    return out


def uq_maps(
    rec: Reconstruction, angles: Sequence[float], calibrator: uq.ConformalCalibrator | None = None
) -> dict[str, np.ndarray]:
    """The arrays of :data:`MAP_KEYS` for one reconstruction."""
    samples = rec.samples
    fourier = uq.fourier_deviation(samples, p=1)
    inside, _ = uq.wedge_mask(samples.shape[-1], angles)
    maps = {
        "fbp": rec.fbp,
        "map": rec.map,
        "mean": rec.mean,
        "std": rec.std,
        "mad_p1": uq.mean_absolute_deviation(samples, p=1),
        "mad_p2": uq.mean_absolute_deviation(samples, p=2),
        "fourier_mad": fourier,
        "fourier_mad_log10": torch.log10(fourier.clamp_min(float(fourier.max()) * 1e-8 + 1e-30)),
        "wedge_mask": inside,
        "samples": samples,
        "measurement": rec.y,
        "angles": torch.as_tensor(np.asarray(angles, dtype=np.float64)),
    }
    if rec.truth is not None:
        maps["truth"] = rec.truth
        maps["abs_error"] = (rec.mean - rec.truth).abs()
    if calibrator is not None:
        lo, hi = calibrator.intervals(samples)
        maps.update(calibrated_levels=torch.tensor(calibrator.levels), calibrated_lo=lo, calibrated_hi=hi)
    return {k: v.detach().cpu().numpy() for k, v in maps.items() if v is not None}


def wedge_ratio(samples: torch.Tensor, angles: Sequence[float]) -> float | None:
    """The wedge energy ratio, or None when the angles leave no missing wedge."""
    if not uq.missing_wedges(angles):
        return None
    return float(uq.wedge_energy_ratio(samples, angles))


def misfit(op: LimitedAngleCT, rec: Reconstruction, residual: uq.GaussianResidual | None = None) -> uq.Misfit:
    """The chi-square data misfit of the posterior mean on the prior's range.

    Without ``residual``: ``||y - A <X>||^2 / sigma^2`` (:func:`invprob.uq.residual_chi2`). With it,
    the mean of the range samples (``rec.range_mean``, before the residual was added, so the
    residual's draws cannot absorb a misfit) is tested under the residual model's covariance
    (:meth:`invprob.uq.GaussianResidual.misfit`): the off-range error that model expects is not
    counted, the rest is.
    """
    if residual is None:
        return uq.residual_chi2(op, rec.mean, rec.y, rec.sigma)
    mean = rec.mean if rec.range_mean is None else rec.range_mean
    return residual.misfit(op, mean, rec.y, rec.sigma)


def range_distance(prior, x: torch.Tensor) -> float:
    """``||x - P(x)|| / ||x||``: how far an image lies from the prior's range (``P`` the prior's projection)."""
    with torch.no_grad():
        projected = prior.project(x.unsqueeze(0))[0]
    return float((x - projected).norm() / x.norm().clamp_min(1e-12))
