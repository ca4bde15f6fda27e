"""Uncertainty quantification from posterior samples.

Every function takes ``samples`` with the sample axis at ``dim`` (0 by default; ``dim=1`` on a
batched ``Result.samples`` of shape ``(B, S, *shape)``) and reduces over that axis. One concept
per module:

- :mod:`~invprob.uq.summaries`: :func:`posterior_mean`, :func:`posterior_std`,
  :func:`mean_absolute_deviation` (``E |X - <X>|^p``), :func:`sample_snr`, :func:`mmse_snr`
  (:func:`invprob.metrics.snr` of each sample and of the posterior mean), :func:`diversity`;
- :func:`effective_sample_size` of MCMC chains and :class:`RunningMoments` (from
  :mod:`invprob.solvers.chain_stats`, where the samplers use them);
- :mod:`~invprob.uq.intervals`: :func:`credible_interval`, :func:`interval_width`,
  :func:`coverage` (the points of a reliability diagram), :func:`min_samples_for_level`;
- :mod:`~invprob.uq.fourier`: :func:`fourier_deviation`, :func:`frequency_polar`,
  :func:`missing_wedges`, :func:`wedge_width`, :func:`wedge_mask`, :func:`wedge_energy_ratio`
  (the cone of uncertainty along the missing CT angles);
- :mod:`~invprob.uq.calibration`: :class:`ConformalCalibrator` (split-conformal scaling of
  pixel-wise intervals, saved as JSON), :func:`min_calibration_phantoms`;
- :mod:`~invprob.uq.reach`: :func:`residual_chi2`, :func:`reach_check` (is a measurement within
  the prior's reach?);
- :mod:`~invprob.uq.residual`: :class:`GaussianResidual` (the prior's off-range error as a
  Gaussian fitted on training images, conditioned on the measurement to widen range samples
  where the prior cannot represent the truth; its chi-square misfit test), :class:`EdgeAdaptiveResidual`
  (the same with moments that follow the range image's edge strength), :func:`edge_strength`,
  :func:`solve_spd`.

The limited-angle CT workflow built on these is :func:`invprob.apps.ct_uq.ct_workflow`.

References:
    Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for Inference and
    Inverse Problems" (UAI), sec. 3.2 and 4.3; Angelopoulos, Kohli, Bates, Jordan, Malik, Alshaabi,
    Upadhyayula, Romano 2022, "Image-to-image regression with distribution-free uncertainty
    quantification and applications in imaging" (ICML).
"""

from .calibration import CalibrationError, ConformalCalibrator, min_calibration_phantoms
from ..solvers.chain_stats import RunningMoments, effective_sample_size
from .fourier import fourier_deviation, frequency_polar, missing_wedges, wedge_energy_ratio, wedge_mask, wedge_width
from .intervals import DEFAULT_LEVELS, coverage, credible_interval, interval_width, min_samples_for_level
from .reach import Misfit, ReachCheck, reach_check, residual_chi2
from .residual import EdgeAdaptiveResidual, GaussianResidual, edge_strength, solve_spd
from ._validate import check_levels
from .summaries import diversity, mean_absolute_deviation, mmse_snr, posterior_mean, posterior_std, sample_snr

__all__ = [
    "CalibrationError",
    "ConformalCalibrator",
    "DEFAULT_LEVELS",
    "EdgeAdaptiveResidual",
    "GaussianResidual",
    "Misfit",
    "ReachCheck",
    "RunningMoments",
    "check_levels",
    "coverage",
    "credible_interval",
    "diversity",
    "edge_strength",
    "effective_sample_size",
    "fourier_deviation",
    "frequency_polar",
    "interval_width",
    "mean_absolute_deviation",
    "min_calibration_phantoms",
    "min_samples_for_level",
    "missing_wedges",
    "mmse_snr",
    "posterior_mean",
    "posterior_std",
    "reach_check",
    "residual_chi2",
    "sample_snr",
    "solve_spd",
    "wedge_energy_ratio",
    "wedge_mask",
    "wedge_width",
]
