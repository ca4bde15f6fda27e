"""Fourier-domain uncertainty of limited-angle CT posteriors and the missing wedge of a scan.

- :func:`frequency_polar`: direction (in ``[0, 180)``) and radius of each frequency of a centred FFT;
- :func:`fourier_deviation`: the centred spectrum of ``E |F X - <F X>|^p`` over the samples'
  Fourier transforms;
- :func:`missing_wedges`: the angular gaps of a scan, ``(start, end)`` both in ``[0, 180)``;
- :func:`wedge_mask`, :func:`wedge_energy_ratio`: the frequencies no projection samples, and the
  deviation energy there relative to elsewhere (the cone of uncertainty, as a number).

By the Fourier-slice theorem the projection at angle ``theta`` samples the image's spectrum on
the line of direction ``theta`` through the origin; directions no angle comes near are unmeasured.

References:
    Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for Inference and
    Inverse Problems" (UAI), sec. 4.3 and fig. 3 (Fourier-domain deviation along the missing
    wedge); Natterer 2001, "The Mathematics of Computerized Tomography" (SIAM), ch. II.1
    (Fourier-slice theorem).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._checks import check_float, check_int
from ..operators.ct import check_angles
from ._validate import check_power, check_samples


def frequency_polar(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Direction (degrees in ``[0, 180)``) and radius of every frequency of a centred ``size x size`` FFT.

    The grid is that of ``fftshift(fft2(image))``: index ``(r, c)`` holds the frequency
    ``(k_row, k_col) = (r - N // 2, c - N // 2)`` (cycles per image). In the image axes of
    :mod:`invprob.operators.radon_backends` (``x`` right, ``y`` up, so ``k_y = -k_row``) the
    direction is ``phi = atan2(-k_row, k_col) mod 180``. By the Fourier-slice theorem the
    projection at angle ``theta`` samples the spectrum on the line ``phi = theta`` through the origin.
    Both are float64 tensors of shape ``(size, size)``; the zero frequency has direction 0, radius 0.
    """
    size = check_int(size, "size", minimum=1)
    k = torch.arange(size, dtype=torch.float64) - size // 2
    k_row, k_col = torch.meshgrid(k, k, indexing="ij")
    direction = torch.rad2deg(torch.atan2(-k_row, k_col)).remainder(180.0)
    direction = torch.where(direction < 180.0, direction, torch.zeros_like(direction)) + 0.0  # no 180.0, no -0.0
    return direction, torch.hypot(k_row, k_col)


def fourier_deviation(samples: torch.Tensor, p: float = 1.0, dim: int = 0) -> torch.Tensor:
    """Centred spectrum of the deviation ``E |F X - <F X>|^p`` over the samples' 2-D Fourier transforms.

    ``F`` is the orthonormal 2-D DFT over the last two axes, ``<F X>`` the mean of the samples'
    transforms and ``|.|`` the complex modulus; the result is ``fftshift``-ed so the zero
    frequency sits at index ``(H // 2, W // 2)`` (see :func:`frequency_polar`). With ``p = 1`` this
    is the Fourier spectrum of the mean absolute deviation of Kothari et al. 2021 (sec. 4.3, fig. 3); with
    ``p = 2`` it is the posterior variance per frequency, which sums (Parseval) to the sum of the
    pixel-wise ``1/S`` variances. Shape: ``samples`` without the sample axis.

    Example:
        >>> samples = torch.randn(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> fourier_deviation(samples).shape
        torch.Size([1, 8, 8])
    """
    p = check_power(p)
    dim = check_samples(samples, dim)
    if samples.dim() - dim < 3:
        raise ValueError(f"samples: expected two image axes after the sample axis {dim}, got shape {tuple(samples.shape)}")
    spectra = torch.fft.fft2(samples, norm="ortho")
    deviation = (spectra - spectra.mean(dim, keepdim=True)).abs().pow(p).mean(dim)
    return torch.fft.fftshift(deviation, dim=(-2, -1))


def missing_wedges(
    angles: Sequence[float] | np.ndarray | torch.Tensor, gap_factor: float = 2.0
) -> list[tuple[float, float]]:
    """Angular gaps of a CT scan, ``(start, end)`` in degrees, both in ``[0, 180)`` like the angles.

    The angles (each in ``[0, 180)``) are sorted on the circle of directions modulo 180°; a gap
    between consecutive angles (the last one wrapping to the first plus 180°) counts as a missing
    wedge when it is at least ``gap_factor`` times the median gap. A wedge runs from ``start``
    through increasing directions to ``end``; when ``end < start`` it wraps through 180° = 0°, and
    its width is always ``(end - start) mod 180`` (:func:`wedge_width`). Evenly spread angles, and a
    single angle, have none (an empty list).

    Example:
        >>> missing_wedges(np.linspace(30.0, 150.0, 30))  # the 60° wedge around the horizontal frequency axis
        [(150.0, 30.0)]
    """
    gap_factor = check_float(gap_factor, "gap_factor", minimum=1)
    a = np.unique(np.asarray(check_angles(angles), dtype=np.float64))
    ends = np.append(a[1:], a[0] + 180.0)
    widths = ends - a
    limit = gap_factor * float(np.median(widths)) * (1 - 1e-9)
    return [(float(s), float(e % 180.0)) for s, e, w in zip(a, ends, widths) if w >= limit]


def wedge_width(wedge: tuple[float, float]) -> float:
    """Width in degrees of a wedge ``(start, end)`` of :func:`missing_wedges`: ``(end - start) mod 180``.

    Example:
        >>> wedge_width((150.0, 30.0))
        60.0
    """
    start, end = wedge
    return float((end - start) % 180.0)


def wedge_mask(
    size: int, angles: Sequence[float] | np.ndarray | torch.Tensor, gap_factor: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks ``(inside, outside)`` of the missing wedge on a centred ``size x size`` spectrum.

    Only frequencies in the disc ``0 < |k| <= size // 2`` are counted (the corners beyond it exist
    only along the diagonals and would bias a comparison of directions). ``inside``: directions
    strictly inside a gap of :func:`missing_wedges`, i.e. frequencies no projection samples;
    ``outside``: the rest of the disc.
    """
    direction, radius = frequency_polar(size)
    disc = (radius > 0) & (radius <= size // 2)
    inside = torch.zeros_like(disc)
    for start, end in missing_wedges(angles, gap_factor):
        offset = (direction - start).remainder(180.0)
        inside |= (offset > 0) & (offset < wedge_width((start, end)))
    inside &= disc
    return inside, disc & ~inside


def wedge_energy_ratio(
    samples: torch.Tensor, angles: Sequence[float] | np.ndarray | torch.Tensor, dim: int = 0, gap_factor: float = 2.0
) -> torch.Tensor:
    """Mean Fourier-domain deviation energy per frequency inside the missing wedge over that outside it.

    With ``V(k) = E |F X(k) - <F X(k)>|^2`` (:func:`fourier_deviation` with ``p = 2``), the ratio is
    ``mean_{k in wedge} V(k) / mean_{k outside} V(k)`` over the masks of :func:`wedge_mask` (and
    over any channel axes). It turns the cone of high uncertainty along the missing angles seen in
    Kothari et al. 2021 (fig. 3) into a number: 1 means no preferred direction, above 1 more uncertainty where
    no projection looked. Returns shape ``samples.shape[:dim]``. Raises ``ValueError`` if the
    angles leave no missing wedge or the image is too small for the wedge to hold a frequency.
    """
    dim = check_samples(samples, dim, minimum=2)
    size = samples.shape[-1]
    if samples.shape[-2] != size:
        raise ValueError(f"samples: expected square images, got {tuple(samples.shape[-2:])}")
    if not missing_wedges(angles, gap_factor):
        raise ValueError("angles: no missing wedge (no gap between consecutive angles stands out); the ratio is undefined")
    inside, outside = (m.to(samples.device) for m in wedge_mask(size, angles, gap_factor))
    if not bool(inside.any()) or not bool(outside.any()):
        raise ValueError(f"samples: a {size}x{size} spectrum has no frequency inside (or outside) the missing wedge")
    power = fourier_deviation(samples, p=2, dim=dim)
    power = power.reshape(*samples.shape[:dim], -1, size, size)
    return power[..., inside].mean((-1, -2)) / power[..., outside].mean((-1, -2))
