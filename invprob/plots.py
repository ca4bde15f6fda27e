"""Figures: image grids and panel rows for benchmarks and demos (matplotlib, no screen needed).

The CT uncertainty maps and reliability diagrams live with their workflow, in
:mod:`invprob.apps.ct_uq.figures`."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


PIXEL_SCALE = "pixel value (data range [-1, 1], clipped)"
"""The label of :func:`image_grid`'s shared colour bar for images in the data range."""


def to_display(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A ``(C, H, W)`` or ``(H, W)`` image in [-1, 1] as an ``(H, W)`` or ``(H, W, 3)`` array in [0, 1]."""
    a = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, dtype=np.float32)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1)
    return np.clip((a + 1.0) / 2.0, 0.0, 1.0)


def image_grid(
    rows: Sequence[Sequence[torch.Tensor | np.ndarray]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    cell_inches: float = 1.4,
    colorbar: str | None = None,
) -> Path:
    """Draw ``rows`` of images (values in [-1, 1]) with labels and save a PNG at ``path``.

    ``captions[i][j]`` (optional, e.g. ``"31.2 dB"``) is written under image ``j`` of row ``i``.
    ``colorbar`` (optional) labels one grey scale bar on the right, shared by every image (values
    outside [-1, 1] are shown clipped).

    Example:
        >>> import tempfile, torch
        >>> path = image_grid([[torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]], ["a"], ["zero", "one"],
        ...                   tempfile.mkdtemp() + "/grid.png", captions=[["", "1 dB"]])
        >>> path.name
        'grid.png'
    """
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    extra = 0.25 if captions else 0.0
    bar_inches = 0.9 if colorbar else 0.0
    width = cell_inches * n_cols + 0.8 + bar_inches
    title = _wrapped(title, width) if title else None
    title_lines = title.count("\n") if title else 0
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, (cell_inches + extra) * n_rows + 0.6 + 0.18 * title_lines),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(to_display(row[j]), cmap="gray", vmin=0, vmax=1)
                if captions and j < len(captions[i]) and captions[i][j]:
                    ax.set_xlabel(captions[i][j], fontsize=7, labelpad=2)
            else:
                ax.axis("off")
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
        axes[i][0].set_ylabel(row_labels[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    right = 1.0 - bar_inches / width
    fig.tight_layout(rect=(0.0, 0.0, right, 1.0))
    if colorbar:
        _shared_colorbar(fig, colorbar, right)
    return _save(fig, path)


def _shared_colorbar(fig: plt.Figure, label: str, left: float) -> None:
    """A grey scale bar for values in [-1, 1] in the figure's right margin, starting at ``left``."""
    cax = fig.add_axes((left + 0.15 * (1.0 - left), 0.15, 0.18 * (1.0 - left), 0.7))
    shown = plt.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-1.0, 1.0), cmap="gray")
    bar = fig.colorbar(shown, cax=cax)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=7)


def _wrapped(title: str, width_inches: float) -> str:
    """``title`` broken into lines that fit a figure ``width_inches`` wide at the titles' font size."""
    return textwrap.fill(title, int(width_inches * 12))


@dataclass
class Panel:
    """One panel of :func:`panel_row`: an image in ``[-1, 1]`` (grey, no colour bar), or a map of
    other values when ``colorbar`` names them (own colour scale and a colour bar with that label)."""

    label: str
    image: torch.Tensor | np.ndarray
    caption: str = ""
    colorbar: str | None = None
    cmap: str = "magma"


def panel_row(panels: Sequence[Panel], path: str | Path, *, title: str | None = None, cell_inches: float = 2.0) -> Path:
    """Panels side by side (e.g. measurement, start, reconstruction, truth) saved as a PNG at ``path``.

    Example:
        >>> import tempfile, torch
        >>> path = panel_row([Panel("x", torch.zeros(1, 8, 8), "truth"), Panel("std", torch.rand(8, 8), colorbar="std")],
        ...                  tempfile.mkdtemp() + "/row.png", title="demo")
        >>> path.suffix
        '.png'
    """
    if not panels:
        raise ValueError("panels: expected at least one panel, got none")
    width = max(cell_inches * len(panels) + 0.4, 6.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, cell_inches + 1.1), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        ax.set_xticks([])
        ax.set_yticks([])
        if panel.colorbar is None:
            ax.imshow(to_display(panel.image), cmap="gray", vmin=0, vmax=1)
        else:
            a = _single_channel(panel.image)
            shown = ax.imshow(a, cmap=panel.cmap)
            bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
            bar.set_label(panel.colorbar, fontsize=7)
            bar.ax.tick_params(labelsize=6)
        ax.set_title(textwrap.fill(panel.label, int(cell_inches * 13)), fontsize=8)
        if panel.caption:
            ax.set_xlabel(panel.caption, fontsize=7, labelpad=2)
    if title:
        fig.suptitle(_wrapped(title, width), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _single_channel(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A ``(C, H, W)`` or ``(H, W)`` map as its first channel ``(H, W)``, float64."""
    a = image.detach().cpu().double().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, dtype=np.float64)
    return a[0] if a.ndim == 3 else a


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
