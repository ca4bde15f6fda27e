"""Is a measurement within the prior's reach? A chi-square test of the data misfit.

If the posterior explains a measurement ``y = A x + e``, ``e ~ N(0, sigma^2 I_m)``, the residual
of its mean, ``T = ||y - A <X>||^2 / sigma^2``, is at most about a ``chi^2_m`` variable (a fitted
estimate leaves less than the noise). A slice unlike the prior's training data leaves a residual
the prior cannot remove: ``T / m`` well above 1, and a tiny upper-tail probability
``P(chi^2_m >= T)``. :func:`residual_chi2` computes ``T``, ``T / m`` and that p-value;
:func:`reach_check` flags the input when the p-value is below ``alpha`` and, given the reduced
chi-square values of a calibration set (where the same imperfect prior leaves its usual
misfit), when ``T / m`` also exceeds the largest of them by the factor ``margin`` (default
:data:`DEFAULT_MARGIN`; exceeding them all has conformal p-value ``1 / (K + 1)``, too frequent
with a handful of calibration phantoms, so the margin guards against the largest misfit of a
small set). Without a calibration set an imperfect prior may be flagged on its own training
distribution: the flag then says the data are not explained to the noise level.
Calibrated intervals (:mod:`invprob.uq.calibration`) are not claimed to hold for a flagged input.

References:
    Tarantola 2005, "Inverse Problem Theory and Methods for Model Parameter Estimation" (SIAM),
    sec. 7.3 (the chi-square misfit test of a solution against the noise); Bates, Candès, Lei,
    Romano, Sesia 2023, "Testing for outliers with conformal p-values" (Annals of Statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .._checks import check_float

DEFAULT_ALPHA = 1e-3
DEFAULT_MARGIN = 1.5


@dataclass(frozen=True)
class Misfit:
    """``statistic`` ``T = ||y - A x||^2 / sigma^2``, ``dof`` ``m``, ``reduced`` ``T / m``, ``p_value`` ``P(chi^2_m >= T)``."""

    statistic: float
    dof: int
    reduced: float
    p_value: float


@dataclass(frozen=True)
class ReachCheck:
    """The verdict of :func:`reach_check`; ``to_dict()`` for a JSON summary."""

    out_of_reach: bool
    misfit: Misfit
    alpha: float
    reference_max: float | None
    conformal_p_value: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["misfit"] = asdict(self.misfit)
        return out


def chi2_sf(statistic: float, dof: int) -> float:
    """Upper tail ``P(chi^2_dof >= statistic)`` (the regularised upper incomplete gamma function).

    Example:
        >>> round(chi2_sf(3.84, 1), 3)
        0.05
    """
    value = torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64),
                                    torch.tensor(max(statistic, 0.0) / 2.0, dtype=torch.float64))
    return float(value)


def residual_chi2(operator: Any, x: torch.Tensor, y: torch.Tensor, sigma: float) -> Misfit:
    """The misfit of one estimate ``x`` (an image, no batch axis) to its measurement ``y`` (no batch axis).

    Example:
        >>> from invprob.operators import Identity
        >>> op = Identity((1, 4, 4))
        >>> misfit = residual_chi2(op, torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.1), sigma=0.1)
        >>> misfit.dof, round(misfit.reduced, 6)
        (16, 1.0)
    """
    sigma = check_float(sigma, "sigma", minimum=0, strict=True)
    with torch.no_grad():
        residual = y.unsqueeze(0) - operator(x.unsqueeze(0).to(dtype=y.dtype, device=y.device))
    statistic = float(residual.double().pow(2).sum()) / sigma**2
    dof = int(residual.numel())
    return Misfit(statistic, dof, statistic / dof, chi2_sf(statistic, dof))


def reach_check(
    misfit: Misfit,
    reference: Sequence[float] | None = None,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
) -> ReachCheck:
    """Flag a measurement the prior cannot explain (see the module docstring).

    Without ``reference``: out of reach when ``P(chi^2_m >= T) < alpha``. With ``reference`` (the
    reduced chi-square of ``K`` calibration measurements): out of reach when, in addition,
    ``T / m > margin * max(reference)``; ``conformal_p_value`` is
    ``(1 + #{reference >= T / m}) / (K + 1)``.

    Example:
        >>> check = reach_check(Misfit(200.0, 100, 2.0, chi2_sf(200.0, 100)), reference=[1.8, 2.5, 3.1])
        >>> check.out_of_reach, check.conformal_p_value
        (False, 0.75)
        >>> reach_check(Misfit(2000.0, 100, 20.0, chi2_sf(2000.0, 100)), reference=[1.8, 2.5, 3.1]).out_of_reach
        True
    """
    alpha = check_float(alpha, "alpha", minimum=0, maximum=1, strict=True)
    chi2_flag = misfit.p_value < alpha
    if reference is None or len(reference) == 0:
        reason = (f"data misfit chi2/m = {misfit.reduced:.3g} (p = {misfit.p_value:.2g} {'<' if chi2_flag else '>='} "
                  f"{alpha:g}; no calibration set to compare with)")
        return ReachCheck(chi2_flag, misfit, alpha, None, None, reason)
    values = [check_float(v, "reference", minimum=0) for v in reference]
    margin = check_float(margin, "margin", minimum=1)
    above = misfit.reduced > margin * max(values)
    p_conf = (1 + sum(v >= misfit.reduced for v in values)) / (len(values) + 1)
    flag = chi2_flag and above
    reason = (f"data misfit chi2/m = {misfit.reduced:.3g} (p = {misfit.p_value:.2g}), "
              f"{'above' if above else 'within'} {margin:g} x the calibration set's largest ({max(values):.3g}; "
              f"conformal p = {p_conf:.2g})")
    return ReachCheck(flag, misfit, alpha, max(values), p_conf, reason)


