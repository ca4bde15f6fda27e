"""Figures: image grids for benchmarks and demos (matplotlib, no screen needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


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
    cell_inches: float = 1.4,
) -> Path:
    """Draw ``rows`` of images (values in [-1, 1]) with labels and save a PNG at ``path``."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_inches * n_cols + 0.8, cell_inches * n_rows + 0.6), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(to_display(row[j]), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
        axes[i][0].set_ylabel(row_labels[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
