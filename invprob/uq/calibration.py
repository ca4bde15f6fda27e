"""Split-conformal calibration of pixel-wise posterior intervals, fitted on phantoms with known truth.

A posterior sampler that is overconfident (or too cautious) by an unknown factor gives central
credible intervals whose coverage is not their nominal level. :class:`ConformalCalibrator` learns,
from a calibration set of ``(samples, truth)`` pairs, one scale per level for the intervals

    C_l(j) = [m_j - q_l s_j, m_j + q_l s_j],

``m_j`` and ``s_j`` the posterior mean and standard deviation of pixel ``j`` (``s_j`` floored at
``std_floor``). With the score ``r_j = |x_j - m_j| / s_j`` of every calibration pixel (``K``
phantoms of ``P`` pixels each, ``n = K P`` scores), ``q_l`` is the ``k``-th smallest score, with

- ``correction="pixels"`` (default): ``k = ceil(l (n + 1))``, the split-conformal rank of
  Vovk et al. and Angelopoulos & Bates;
- ``correction="phantoms"``: ``k = ceil(l (K + 1) P)``, the rank that treats each phantom, not
  each pixel, as the exchangeable unit.

**Guarantee.** Let the calibration phantoms and a new phantom be exchangeable (e.g. independent
draws from one distribution, measured and sampled the same way), and ``J`` a pixel drawn uniformly
from the new phantom. With ``correction="phantoms"``, ``P(x_J in C_l(J)) >= l`` for every level,
marginally over the phantoms, the noise, the sampler's randomness and the pixel — not for each
pixel, nor for each phantom; the price is coverage up to ``l (K + 1) / K`` (e.g. 99.75 % for
``l = 95 %``, ``K = 20``). With
``correction="pixels"`` that bound is exact only if the pixel scores themselves are exchangeable;
pixels of one phantom are dependent, so for exchangeable phantoms the coverage is ``l`` up to a
fluctuation that shrinks like ``1 / sqrt(K)`` (the pooled empirical distribution of the scores is
an unbiased estimate of a random pixel's score distribution). Neither holds for an input unlike
the calibration phantoms (see :mod:`invprob.uq.reach`). Both need ``K >= l / (1 - l)`` phantoms
(:func:`min_calibration_phantoms`: 50 %: 1, 80 %: 4, 90 %: 9, 95 %: 19); a smaller set is refused.

The calibrator is saved to and loaded from a small JSON file (:meth:`ConformalCalibrator.save`,
:meth:`ConformalCalibrator.load`).

References:
    Vovk, Gammerman, Shafer 2005, "Algorithmic Learning in a Random World" (Springer), ch. 2
    (conformal prediction); Angelopoulos, Bates 2023, "Conformal Prediction: A Gentle Introduction"
    (Foundations and Trends in ML), sec. 1-2 (split conformal, the ``(n + 1)`` correction);
    Angelopoulos, Kohli, Bates, Jordan, Malik, Alshaabi, Upadhyayula, Romano 2022, "Image-to-image
    regression with distribution-free uncertainty quantification and applications in imaging"
    (ICML) (pixel-wise intervals calibrated on held-out images, guarantees marginal over pixels and
    images); Angelopoulos, Bates, Fisch, Lei, Schuster 2022, "Conformal Risk Control" (ICLR 2024).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._checks import check_float, check_int
from ._validate import check_levels, check_samples, check_truth
from .intervals import DEFAULT_LEVELS

FORMAT = "invprob.uq.ConformalCalibrator"
VERSION = 1
CORRECTIONS = ("pixels", "phantoms")
DEFAULT_RELATIVE_FLOOR = 1e-3
"""Default ``std_floor``: this fraction of the calibration set's mean posterior std."""


class CalibrationError(ValueError):
    """A calibration file that cannot be read back (wrong format, missing or bad fields)."""


def min_calibration_phantoms(level: float) -> int:
    """Fewest calibration phantoms ``K`` for a level ``l``: ``K >= l / (1 - l)``, i.e. ``l <= K / (K + 1)``.

    Below it the conformal rank ``ceil(l (K + 1) P)`` exceeds the ``K P`` scores: no finite
    scale covers the new phantom with probability ``l``.

    Example:
        >>> [min_calibration_phantoms(level) for level in (0.5, 0.8, 0.9, 0.95)]
        [1, 4, 9, 19]
    """
    level = check_float(level, "level", minimum=0, maximum=1, strict=True)
    return max(1, math.ceil(level / (1 - level) - 1e-9))


def _check_set_size(n_phantoms: int, levels: Sequence[float]) -> None:
    needed = min_calibration_phantoms(max(levels))
    if n_phantoms < needed:
        raise ValueError(
            f"calibration set: {n_phantoms} phantom(s) cannot calibrate a {max(levels):.0%} interval "
            f"(K phantoms support levels up to K/(K+1)); use at least {needed} or lower the levels"
        )


def _as_pairs(samples: Any, truths: Any, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples ``(K, S, *shape)`` and truths ``(K, *shape)`` from stacked tensors or sequences of pairs."""
    if isinstance(samples, torch.Tensor):
        dim = check_samples(samples, dim, minimum=2)
        if dim != 1:
            samples = samples.movedim(dim, 1)
    else:
        samples = list(samples)
        if not samples:
            raise ValueError("samples: expected a calibration set of at least one phantom, got none")
        shapes = {tuple(s.shape) if isinstance(s, torch.Tensor) else None for s in samples}
        if len(shapes) != 1 or None in shapes:
            raise ValueError(f"samples: expected tensors (S, *shape) of one shape, got shapes {sorted(map(str, shapes))}")
        samples = torch.stack(samples)
    samples = samples.double()
    check_samples(samples, 1, minimum=2)
    truths = torch.stack(list(truths)) if not isinstance(truths, torch.Tensor) else truths
    check_truth(samples, truths, 1)
    if samples.dim() < 3:
        raise ValueError(f"samples: expected (K, S, *shape) with at least one pixel axis, got {tuple(samples.shape)}")
    return samples, truths.to(samples.device, torch.float64)


class ConformalCalibrator:
    """Scales ``q_l`` of the intervals ``mean ± q_l std``, one per level, fitted by split conformal prediction.

    See the module docstring for the scores, the ranks and the guarantee. Build one with
    :meth:`fit` or :meth:`load`; apply it with :meth:`intervals`, :meth:`coverage`, :meth:`width`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> truths = torch.randn(10, 500, generator=g)              # 10 phantoms of 500 pixels, N(0, 1)
        >>> samples = 0.5 * torch.randn(10, 40, 500, generator=g)   # an overconfident posterior: N(0, 0.25)
        >>> cal = ConformalCalibrator.fit(samples, truths, levels=(0.5, 0.9))
        >>> [round(q, 1) for q in cal.scales]                       # about 2 x the N(0, 1) quantiles 0.67, 1.64
        [1.4, 3.3]
        >>> new = 0.5 * torch.randn(40, 2000, generator=g)
        >>> [round(c, 1) for c in cal.coverage(new, torch.randn(2000, generator=g)).tolist()]
        [0.5, 0.9]
    """

    def __init__(
        self,
        levels: Sequence[float],
        scales: Sequence[float],
        std_floor: float,
        *,
        n_phantoms: int,
        n_pixels: int,
        correction: str = "pixels",
        calibration_coverage: Sequence[float] | None = None,
        misfit: Sequence[float] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        self.levels = check_levels(levels)
        self.scales = tuple(check_float(q, "scales", minimum=0) for q in scales)
        if len(self.scales) != len(self.levels):
            raise ValueError(f"scales: expected one per level ({len(self.levels)}), got {len(self.scales)}")
        if list(self.levels) != sorted(set(self.levels)):
            raise ValueError(f"levels: expected increasing distinct levels, got {list(self.levels)}")
        self.std_floor = check_float(std_floor, "std_floor", minimum=0, strict=True)
        self.n_phantoms = check_int(n_phantoms, "n_phantoms", minimum=1)
        self.n_pixels = check_int(n_pixels, "n_pixels", minimum=1)
        if correction not in CORRECTIONS:
            raise ValueError(f"correction: expected one of {CORRECTIONS}, got {correction!r}")
        self.correction = correction
        self.calibration_coverage = None if calibration_coverage is None else tuple(map(float, calibration_coverage))
        self.misfit = None if misfit is None else tuple(check_float(m, "misfit", minimum=0) for m in misfit)
        if context is not None and not isinstance(context, dict):
            raise TypeError(f"context: expected a JSON-ready dict or None, got {type(context).__name__}")
        self.context = context
        _check_set_size(self.n_phantoms, self.levels)

    @classmethod
    def fit(
        cls,
        samples: torch.Tensor | Sequence[torch.Tensor],
        truths: torch.Tensor | Sequence[torch.Tensor],
        levels: Sequence[float] = DEFAULT_LEVELS,
        *,
        dim: int = 1,
        correction: str = "pixels",
        std_floor: float | None = None,
        misfit: Sequence[float] | None = None,
        context: dict[str, Any] | None = None,
    ) -> ConformalCalibrator:
        """Fit the scales on ``K`` phantoms: ``samples`` ``(K, S, *shape)`` (sample axis ``dim``) or a
        sequence of ``(S, *shape)`` tensors, and ``truths`` ``(K, *shape)`` or a sequence.

        ``std_floor`` (default: :data:`DEFAULT_RELATIVE_FLOOR` times the mean posterior std of the
        set) keeps pixels where all samples agree from dividing by zero; ``misfit`` (optional, one
        value per phantom, e.g. the reduced chi-square of :func:`invprob.uq.reach.residual_chi2`) is
        stored as the reference of the out-of-reach check; ``context`` (optional, JSON-ready) records
        how the samples were drawn (prior, sampler, options), so that a user of the saved file can
        check it is applied to samples drawn the same way. Raises ``ValueError`` for fewer phantoms
        than the highest level needs (:func:`min_calibration_phantoms`).
        """
        levels = tuple(sorted(set(check_levels(levels))))
        if correction not in CORRECTIONS:
            raise ValueError(f"correction: expected one of {CORRECTIONS}, got {correction!r}")
        stacked, truth = _as_pairs(samples, truths, dim)
        n_phantoms, n_pixels = stacked.shape[0], truth[0].numel()
        _check_set_size(n_phantoms, levels)
        mean, std = stacked.mean(1), stacked.std(1)
        if std_floor is None:
            std_floor = max(DEFAULT_RELATIVE_FLOOR * float(std.mean()), 1e-12)
        std_floor = check_float(std_floor, "std_floor", minimum=0, strict=True)
        scores = ((truth - mean).abs() / std.clamp_min(std_floor)).flatten()
        ordered = scores.sort().values
        n = ordered.numel()
        scales = []
        for level in levels:
            if correction == "pixels":
                rank = math.ceil(level * (n + 1) - 1e-9)
            else:
                rank = math.ceil(level * (n_phantoms + 1) * n_pixels - 1e-9)
            scales.append(float(ordered[min(rank, n) - 1]))
        fitted = cls(levels, scales, std_floor, n_phantoms=n_phantoms, n_pixels=n_pixels, correction=correction,
                     misfit=misfit, context=context)
        fitted.calibration_coverage = tuple(fitted.coverage(stacked, truth, dim=1).tolist())
        return fitted

    def intervals(self, samples: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated bounds ``(lo, hi)``, each ``(L, *rest)``: level ``i`` of :attr:`levels` first, then the
        shape of ``samples`` without the sample axis ``dim``."""
        dim = check_samples(samples, dim, minimum=2)
        mean, std = samples.mean(dim), samples.std(dim).clamp_min(self.std_floor)
        scales = torch.tensor(self.scales, dtype=samples.dtype, device=samples.device).reshape(-1, *[1] * mean.dim())
        return mean - scales * std, mean + scales * std

    def coverage(self, samples: torch.Tensor, x_true: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Fraction of entries of ``x_true`` inside their calibrated interval, one value per level (float64, CPU)."""
        dim = check_samples(samples, dim, minimum=2)
        check_truth(samples, x_true, dim)
        lo, hi = self.intervals(samples, dim)
        inside = (lo <= x_true) & (x_true <= hi)
        return inside.flatten(1).double().mean(1).cpu()

    def width(self, samples: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Mean width ``2 q_l std`` of the calibrated intervals over every pixel, per level (float64, CPU)."""
        lo, hi = self.intervals(samples, dim)
        return (hi - lo).flatten(1).double().mean(1).cpu()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready content of the calibration file."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "score": "|x - posterior mean| / max(posterior std, std_floor), per pixel",
            "interval": "posterior mean ± scale * max(posterior std, std_floor)",
            "correction": self.correction,
            "levels": list(self.levels),
            "scales": list(self.scales),
            "std_floor": self.std_floor,
            "n_phantoms": self.n_phantoms,
            "n_pixels": self.n_pixels,
            "calibration_coverage": None if self.calibration_coverage is None else list(self.calibration_coverage),
            "misfit": None if self.misfit is None else list(self.misfit),
            "context": self.context,
        }

    def save(self, path: str | Path) -> Path:
        """Write the calibrator to ``path`` (JSON), atomically: a crash leaves the previous file or none."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConformalCalibrator:
        """Read a calibrator written by :meth:`save`; :class:`CalibrationError` names the file and the problem."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CalibrationError(f"calibration file: no such file {str(path)!r}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CalibrationError(f"calibration file {path}: not readable JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationError(f"calibration file {path}: expected a JSON object with format {FORMAT!r}")
        if data.get("version") != VERSION:
            raise CalibrationError(f"calibration file {path}: expected version {VERSION}, got {data.get('version')!r}")
        try:
            return cls(
                data["levels"], data["scales"], data["std_floor"], n_phantoms=data["n_phantoms"],
                n_pixels=data["n_pixels"], correction=data["correction"],
                calibration_coverage=data.get("calibration_coverage"), misfit=data.get("misfit"),
                context=data.get("context"),
            )
        except KeyError as err:
            raise CalibrationError(f"calibration file {path}: missing field {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise CalibrationError(f"calibration file {path}: {err}") from None

    def __repr__(self) -> str:
        pairs = ", ".join(f"{level:g}: {q:.3g}" for level, q in zip(self.levels, self.scales))
        return f"ConformalCalibrator({{{pairs}}}, K={self.n_phantoms}, correction={self.correction!r})"
