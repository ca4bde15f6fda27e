"""Figures of the CT workflow: the uncertainty maps (``maps.png``) and the reliability diagram.

``maps.png`` has one row of reconstructions (truth, FBP, MAP, posterior mean, each titled with its
SNR and PSNR when the truth is known, on the common grey scale of the prior's ``[-1, 1]`` range)
and one row of uncertainty maps, each with a labelled colour bar: the posterior standard
deviation, the mean absolute deviation ``E |X - <X>|`` over the samples (MAD), the variance
``E |X - <X>|^2``, the absolute error of the mean, and the Fourier spectrum of the deviation
(:func:`invprob.uq.fourier_deviation`) on axes of spatial frequency ``(k_x, k_y)`` in cycles per
image, with the unmeasured wedge of directions hatched.

References:
    Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for Inference and
    Inverse Problems" (UAI), fig. 3 (the layout of these maps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Wedge  # noqa: E402

from ... import uq  # noqa: E402

IMAGE_UNITS = "intensity (prior range [-1, 1])"


def _first_channel(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[0] if a.ndim == 3 else a


def spectrum_extent(size: int) -> tuple[float, float, float, float]:
    """``imshow`` extent (left, right, bottom, top) of a centred spectrum flipped upside down, in cycles per image.

    Column ``c`` is ``k_x = c - N // 2``; row ``r`` is ``k_row = r - N // 2`` and ``k_y = -k_row``
    (image axes ``x`` right, ``y`` up, as :func:`invprob.uq.frequency_polar`); flipping the rows
    puts ``k_y`` upwards, so a direction ``phi`` of :func:`invprob.uq.frequency_polar` is drawn at
    the angle ``phi`` of the axes.

    Example:
        >>> spectrum_extent(4)
        (-2.5, 1.5, -1.5, 2.5)
    """
    half = size // 2
    return (-half - 0.5, size - half - 0.5, -(size - half - 1) - 0.5, half + 0.5)


def _mark_wedges(ax: plt.Axes, size: int, wedges: Sequence[tuple[float, float]]) -> None:
    """Hatch each unmeasured wedge ``(start, end)`` and its point reflection (a real image's spectrum is symmetric)."""
    for i, (start, end) in enumerate(wedges):
        width = uq.wedge_width((start, end))
        for turn in (0.0, 180.0):
            ax.add_patch(Wedge((0, 0), size / 2, start + turn, start + turn + width, fill=False, hatch="///",
                               edgecolor="white", linewidth=1.0,
                               label="unmeasured wedge" if i == 0 and turn == 0 else None))


def uncertainty_figure(
    images: Mapping[str, np.ndarray],
    image_titles: Mapping[str, str],
    spreads: Mapping[str, tuple[np.ndarray, str]],
    spectrum: np.ndarray,
    path: str | Path,
    *,
    wedges: Sequence[tuple[float, float]] = (),
    title: str = "",
    cell_inches: float = 2.5,
) -> Path:
    """Draw ``maps.png`` (see the module docstring).

    ``images``: name -> ``(C, N, N)`` in ``[-1, 1]``; ``image_titles``: name -> panel title (e.g.
    with SNR/PSNR); ``spreads``: panel title -> ``(map, colour-bar label)``; ``spectrum``: the
    centred ``log10`` Fourier deviation ``(C, N, N)``; ``wedges``: of :func:`invprob.uq.missing_wedges`.
    """
    cols = max(len(images), len(spreads) + 1)
    fig, axes = plt.subplots(2, cols, figsize=(cell_inches * cols, cell_inches * 2 + 0.9), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    shown = None
    for ax, (name, image) in zip(axes[0], images.items()):
        shown = ax.imshow(np.clip(_first_channel(image), -1, 1), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(image_titles.get(name, name), fontsize=8)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes[0, len(images) - 1], fraction=0.046, pad=0.03)
        bar.set_label(IMAGE_UNITS, fontsize=7)
        bar.ax.tick_params(labelsize=6)
    for ax in axes[0, len(images):]:
        ax.axis("off")
    for ax, (name, (value, label)) in zip(axes[1], spreads.items()):
        a = _first_channel(value)
        im = ax.imshow(a, cmap="magma", vmin=0, vmax=max(float(a.max()), 1e-12))
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=6)
        ax.set_title(name, fontsize=8)
    ax = axes[1, len(spreads)]
    s = _first_channel(spectrum)
    size = s.shape[-1]
    im = ax.imshow(s[::-1], cmap="viridis", origin="lower", extent=spectrum_extent(size))
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("log10 E|F X - <F X>| (Fourier MAD)", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    _mark_wedges(ax, size, wedges)
    ax.set_xlim(-size / 2, size / 2)
    ax.set_ylim(-size / 2, size / 2)
    ticks = [-(size // 4) * 2, -(size // 4), 0, size // 4, (size // 4) * 2]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize=6)
    ax.set_xlabel("k_x (cycles / image)", fontsize=7)
    ax.set_ylabel("k_y (cycles / image)", fontsize=7)
    ax.set_title("Fourier MAD of the samples", fontsize=8)
    if wedges:
        ax.legend(loc="upper right", fontsize=6, framealpha=0.6)
    for ax in axes[1, len(spreads) + 1:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8.5)
    fig.tight_layout()
    return _save(fig, path)


def reliability_plot(
    levels: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    title: str = "calibration of pixel-wise intervals",
) -> Path:
    """Reliability diagram: the empirical coverage of each curve in ``curves`` against the nominal ``levels``.

    Points on the diagonal mean calibrated intervals; below it, overconfident ones (the truth
    falls outside the ``l`` interval more often than ``1 - l``).
    """
    fig, ax = plt.subplots(figsize=(4.2, 3.9))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="nominal (perfect calibration)")
    for (label, values), marker in zip(curves.items(), "osd^v"):
        ax.plot(list(levels), list(values), marker=marker, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal level of the pixel-wise interval", fontsize=8)
    ax.set_ylabel("empirical coverage (fraction of true pixels inside)", fontsize=8)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=100)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
