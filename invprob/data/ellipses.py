"""Random-ellipse phantoms, the usual synthetic training set for computed tomography.

Image ``i`` of a split is drawn from its own generator,
``numpy.random.default_rng([seed, stream, i])`` with ``stream = 0`` for the training split and
``stream = 1`` for the test split, so any index is reproducible on its own and the two splits
never share a seed. One phantom is made as follows, on the square ``[-1, 1]^2`` sampled at pixel
centres:

- the number of ellipses is uniform on ``n_ellipses`` (inclusive bounds, default 3-10);
- each centre is uniform on the disc of radius 0.6, each semi-axis uniform on ``[0.05, 0.5]``,
  each rotation angle uniform on ``[0, pi)``;
- each intensity has magnitude uniform on ``[0.1, 1]`` and is negative with probability 0.3,
  so that some ellipses carve holes into others;
- the indicator functions are summed with their intensities, clipped to ``[0, 1]``, set to zero
  outside the inscribed disc (the field of view of a CT scanner) and mapped to ``[-1, 1]``.

The parameters are drawn per image; the rasterisation is vectorised over a whole batch of
images and ellipses (see :meth:`EllipseDataset.get_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_int
from .base import as_size, check_split

TRAIN_STREAM = 0
TEST_STREAM = 1
DEFAULT_TRAIN_LENGTH = 100_000
DEFAULT_TEST_LENGTH = 100

_CENTRE_RADIUS = 0.6
_AXIS_RANGE = (0.05, 0.5)
_INTENSITY_RANGE = (0.1, 1.0)
_NEGATIVE_PROBABILITY = 0.3
_CHUNK = 64


def ellipse_parameters(rng: np.random.Generator, n_ellipses: tuple[int, int]) -> np.ndarray:
    """Draw the ellipses of one phantom as rows ``(cx, cy, a, b, angle, intensity)``."""
    k = int(rng.integers(n_ellipses[0], n_ellipses[1] + 1))
    u = rng.random((k, 6))
    radius = _CENTRE_RADIUS * np.sqrt(u[:, 0])
    phi = 2 * np.pi * u[:, 1]
    axes = _AXIS_RANGE[0] + (_AXIS_RANGE[1] - _AXIS_RANGE[0]) * u[:, 2:4]
    angle = np.pi * u[:, 4]
    magnitude = _INTENSITY_RANGE[0] + (_INTENSITY_RANGE[1] - _INTENSITY_RANGE[0]) * u[:, 5]
    sign = np.where(rng.random(k) < _NEGATIVE_PROBABILITY, -1.0, 1.0)
    return np.column_stack(
        [radius * np.cos(phi), radius * np.sin(phi), axes[:, 0], axes[:, 1], angle, sign * magnitude]
    )


@lru_cache(maxsize=8)
def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)`` on ``[-1, 1]^2`` (flattened) and the disc mask."""
    h, w = size
    y = (np.arange(h) + 0.5) / h * 2 - 1
    x = (np.arange(w) + 0.5) / w * 2 - 1
    xx, yy = np.meshgrid(x, y)
    inside = (xx**2 + yy**2) <= 1.0
    return xx.ravel(), yy.ravel(), inside.ravel()


def rasterise(params: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Draw phantoms from per-image ellipse rows; returns ``(N, H, W)`` float32 in ``[0, 1]``.

    The ellipses of all images are padded to a common count (padding rows have intensity 0) and
    their quadratic forms are evaluated on the grid at once, ``_CHUNK`` images at a time.
    """
    xx, yy, disc = _grid(size)
    out = np.empty((len(params), size[0] * size[1]), dtype=np.float32)
    for start in range(0, len(params), _CHUNK):
        block = params[start : start + _CHUNK]
        out[start : start + len(block)] = _rasterise_block(block, xx, yy)
    out *= disc
    return out.reshape(len(params), *size)


def _rasterise_block(params: Sequence[np.ndarray], xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    k_max = max(len(p) for p in params)
    table = np.zeros((len(params), k_max, 6))
    table[:, :, 2:4] = 1.0
    for i, p in enumerate(params):
        table[i, : len(p)] = p
    cx, cy, a, b, angle, intensity = (table[..., j, None] for j in range(6))
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = xx - cx, yy - cy
    u = (dx * cos + dy * sin) / a
    v = (dy * cos - dx * sin) / b
    inside = (u * u + v * v) <= 1.0
    image = np.einsum("nkp,nk->np", inside.astype(np.float32), intensity[..., 0].astype(np.float32))
    return np.clip(image, 0.0, 1.0)


class EllipseDataset(Dataset):
    """Random-ellipse phantoms as ``(1, H, W)`` float32 images in ``[-1, 1]``.

    Map-style: item ``i`` is generated from the seed ``[seed, stream, i]`` (see the module
    docstring), so the training split is an unbounded reproducible stream. ``len()`` reports
    ``length``, the nominal size of one epoch, but every index ``i >= 0`` is valid, even beyond it.
    Shuffling is unnecessary since consecutive items are already independent draws.

    A ``torch.utils.data.DataLoader`` fetches whole batches through :meth:`__getitems__`, which
    rasterises the batch in one vectorised pass.
    """

    def __init__(
        self,
        size: tuple[int, int],
        length: int,
        *,
        seed: int = 0,
        stream: int = TRAIN_STREAM,
        n_ellipses: tuple[int, int] = (3, 10),
    ) -> None:
        self.size = size
        self.length = check_int(length, "length", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.stream = check_int(stream, "stream", minimum=0)
        self.n_ellipses = _check_count_range(n_ellipses)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The ``(C, H, W)`` shape of every item."""
        return (1, *self.size)

    def __len__(self) -> int:
        return self.length

    def parameters(self, index: int) -> np.ndarray:
        """The ellipse rows ``(cx, cy, a, b, angle, intensity)`` of item ``index``."""
        index = check_int(index, "index", minimum=0)
        rng = np.random.default_rng([self.seed, self.stream, index])
        return ellipse_parameters(rng, self.n_ellipses)

    def get_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Items ``indices`` stacked as a ``(len(indices), 1, H, W)`` tensor."""
        params = [self.parameters(int(i)) for i in indices]
        if not params:
            return torch.empty((0, *self.image_shape))
        images = rasterise(params, self.size) * 2.0 - 1.0
        return torch.from_numpy(images[:, None])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.get_batch([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        return list(self.get_batch(indices))


def _check_count_range(n_ellipses: tuple[int, int]) -> tuple[int, int]:
    try:
        low, high = n_ellipses
    except (TypeError, ValueError):
        raise ValueError(f"n_ellipses: expected a pair (min, max), got {n_ellipses!r}") from None
    low = check_int(low, "n_ellipses[0]", minimum=1)
    high = check_int(high, "n_ellipses[1]", minimum=low)
    return low, high


def ellipses_dataset(
    split: str = "train",
    *,
    size: int | tuple[int, int] = 64,
    length: int | None = None,
    seed: int = 0,
    n_ellipses: tuple[int, int] = (3, 10),
) -> EllipseDataset:
    """Random-ellipse phantoms (see the module docstring for the distribution).

    Args:
        split: ``"train"`` — the unbounded seeded stream, ``length`` defaults to 100,000 (the
            epoch size ``len()`` reports); ``"test"`` — the fixed set of the first ``length``
            (default 100) images of a separate seed stream.
        size: image size ``n`` or ``(H, W)``; default 64x64.
        length: see ``split``.
        seed: base seed shared by both splits.
        n_ellipses: inclusive range of the number of ellipses per image.
    """
    check_split(split, ("train", "test"))
    if length is None:
        length = DEFAULT_TRAIN_LENGTH if split == "train" else DEFAULT_TEST_LENGTH
    stream = TRAIN_STREAM if split == "train" else TEST_STREAM
    return EllipseDataset(as_size(size), length, seed=seed, stream=stream, n_ellipses=n_ellipses)
