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

Each phantom is rasterised by two matrix products over all its ellipses and pixels at once
(:func:`rasterise`); a phantom depends on its own index only, never on the batch it is made in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The monomials ``(x^2, xy, y^2, x, y, 1)`` at the pixel centres of ``[-1, 1]^2``, as a
    ``(6, H*W)`` array, and the mask of the inscribed disc, as a flat ``(H*W,)`` array."""
    h, w = size
    y = (np.arange(h) + 0.5) / h * 2 - 1
    x = (np.arange(w) + 0.5) / w * 2 - 1
    xx, yy = (g.ravel() for g in np.meshgrid(x, y))
    monomials = np.stack([xx * xx, xx * yy, yy * yy, xx, yy, np.ones_like(xx)])
    return monomials, (xx * xx + yy * yy) <= 1.0


def quadratic_forms(params: np.ndarray) -> np.ndarray:
    """Coefficients of ``q(x, y)`` on the monomials of :func:`_grid`, one row per ellipse.

    ``q <= 1`` exactly inside the ellipse: with ``(u, v)`` the offset from the centre rotated by
    ``-angle``, ``q = (u / a)^2 + (v / b)^2``, expanded as a quadratic polynomial in ``(x, y)``.
    """
    cx, cy, a, b, angle, _ = params.T
    cos, sin = np.cos(angle), np.sin(angle)
    qa = cos**2 / a**2 + sin**2 / b**2
    qc = sin**2 / a**2 + cos**2 / b**2
    qb = 2 * cos * sin * (1 / a**2 - 1 / b**2)
    return np.column_stack(
        [
            qa,
            qb,
            qc,
            -2 * qa * cx - qb * cy,
            -qb * cx - 2 * qc * cy,
            qa * cx**2 + qb * cx * cy + qc * cy**2,
        ]
    )


def rasterise(params: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Draw one phantom from its ellipse rows; returns ``(H, W)`` float32 in ``[0, 1]``.

    Vectorised over ellipses and pixels: the quadratic forms of all ellipses are evaluated on the
    grid by one matrix product and the indicators are summed, weighted by intensity, by another.
    """
    monomials, disc = _grid(size)
    inside = (quadratic_forms(params) @ monomials) <= 1.0
    image = np.clip(params[:, 5] @ inside, 0.0, 1.0) * disc
    return image.astype(np.float32).reshape(size)


class EllipseDataset(Dataset):
    """Random-ellipse phantoms as ``(1, H, W)`` float32 images in ``[-1, 1]``.

    Map-style: item ``i`` is generated from the seed ``[seed, stream, i]`` (see the module
    docstring), so the training split is an unbounded reproducible stream. ``len()`` and
    iteration cover ``length`` items, the nominal size of one epoch, but indexing accepts every
    ``i >= 0``, even beyond it. Shuffling is unnecessary since consecutive items are already
    independent draws. A ``torch.utils.data.DataLoader`` fetches whole batches at once through
    :meth:`__getitems__`.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        length: int,
        *,
        seed: int = 0,
        stream: int = TRAIN_STREAM,
        n_ellipses: tuple[int, int] = (3, 10),
    ) -> None:
        self.size = as_size(size)
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
        index = check_int(index, "index")
        if index < 0:
            raise IndexError(f"index: the ellipse stream has no negative indices, got {index}")
        rng = np.random.default_rng([self.seed, self.stream, index])
        return ellipse_parameters(rng, self.n_ellipses)

    def get_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Items ``indices`` stacked as a ``(len(indices), 1, H, W)`` tensor."""
        images = np.empty((len(indices), 1, *self.size), dtype=np.float32)
        for row, index in enumerate(indices):
            images[row, 0] = rasterise(self.parameters(index), self.size)
        return torch.from_numpy(images * 2.0 - 1.0)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.get_batch([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        return list(self.get_batch(indices))

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[i] for i in range(self.length))


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
    return EllipseDataset(size, length, seed=seed, stream=stream, n_ellipses=n_ellipses)
