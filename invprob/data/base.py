"""The image convention shared by every dataset, and the helpers that enforce it.

Every dataset in :mod:`invprob.data` yields ``torch.float32`` images of shape ``(C, H, W)`` with
values in ``[-1, 1]`` (the normalisation the flow papers train with). Display code usually wants
``[0, 1]``; :func:`to_unit_range` and :func:`from_unit_range` convert between the two.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from skimage.transform import resize
from torch.utils.data import Dataset

from .._checks import check_int

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

SPLITS = ("train", "test", "all")


def to_unit_range(x: ArrayOrTensor) -> ArrayOrTensor:
    """Map images from ``[-1, 1]`` to ``[0, 1]`` for display, clipping values outside.

    Accepts a tensor or a NumPy array of any shape and returns the same type.
    """
    if isinstance(x, torch.Tensor):
        return ((x + 1) / 2).clamp(0, 1)
    if isinstance(x, np.ndarray):
        return np.clip((x + 1) / 2, 0, 1)
    raise TypeError(f"x: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def from_unit_range(x: ArrayOrTensor) -> ArrayOrTensor:
    """Map images from ``[0, 1]`` to the package convention ``[-1, 1]`` (no clipping)."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return 2 * x - 1
    raise TypeError(f"x: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def as_size(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """Return an image size given as ``n`` or ``(H, W)`` as a pair of positive ints."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        n = check_int(size, name, minimum=1)
        return n, n
    try:
        pair = tuple(size)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name}: expected an int or a pair (H, W), got {size!r}") from None
    if len(pair) != 2:
        raise ValueError(f"{name}: expected an int or a pair (H, W), got {size!r}")
    return check_int(pair[0], name, minimum=1), check_int(pair[1], name, minimum=1)


def check_split(split: object, allowed: Sequence[str] = SPLITS) -> str:
    """Return ``split`` if it is one of ``allowed``, else raise ``ValueError`` listing them."""
    if split not in allowed:
        raise ValueError(f"split: expected one of {', '.join(map(repr, allowed))}, got {split!r}")
    return str(split)


def seeded_split(n: int, n_test: int, seed: int, *, sort_test: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into train and test indices by a permutation seeded with ``seed``.

    The test part is the first ``n_test`` entries of ``numpy.random.default_rng(seed).permutation(n)``,
    sorted, or in the permutation's order with ``sort_test=False`` (for files sorted by class, so
    that the first test items mix the classes); the train part is sorted.
    """
    perm = np.random.default_rng(seed).permutation(n)
    test = perm[:n_test]
    return np.sort(perm[n_test:]), np.sort(test) if sort_test else test


def select_split(n: int, split: str, test_fraction: float, seed: int) -> np.ndarray:
    """Indices of ``split`` (``"train"``, ``"test"`` or ``"all"``) among ``n`` items.

    ``round(test_fraction * n)`` items go to the test split, chosen by :func:`seeded_split`.
    """
    check_split(split)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a number in [0, 1), got {test_fraction!r}")
    if split == "all":
        return np.arange(n)
    train, test = seeded_split(n, int(round(test_fraction * n)), seed)
    return train if split == "train" else test


def resize_stack(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(N, C, H, W)`` images to ``(N, C, *size)`` with anti-aliasing (bilinear).

    All images and channels are resized in one call by moving them to the trailing axis, which
    scikit-image's ``resize`` keeps untouched.
    """
    n, c, h, w = images.shape
    if (h, w) == tuple(size):
        return images
    stacked = images.reshape(n * c, h, w).transpose(1, 2, 0)
    out = resize(stacked, size, order=1, anti_aliasing=True, preserve_range=True)
    return np.ascontiguousarray(out.transpose(2, 0, 1).reshape(n, c, *size))


class ImageTensorDataset(Dataset):
    """Images held in memory as one ``(N, C, H, W)`` float32 tensor in ``[-1, 1]``.

    Args:
        images: the image stack; converted to float32 and checked to lie in ``[-1, 1]``.
        labels: optional integer labels, one per image, kept as the ``labels`` attribute.
        with_labels: if true, items are ``(image, label)`` pairs instead of images.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, *, with_labels: bool = False
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"images: expected shape (N, C, H, W), got {tuple(images.shape)}")
        images = images.to(torch.float32).contiguous()
        if images.numel() and (images.min() < -1 or images.max() > 1):
            raise ValueError("images: values must lie in [-1, 1]")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"labels: expected {len(images)} labels, got {len(labels)}")
        if with_labels and labels is None:
            raise ValueError("with_labels=True needs labels, and this dataset has none")
        self.images = images
        self.labels = labels
        self.with_labels = with_labels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The ``(C, H, W)`` shape of every item."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, int]:
        if self.with_labels:
            return self.images[index], int(self.labels[index])  # type: ignore[index]
        return self.images[index]


def split_images(
    images: torch.Tensor, labels: torch.Tensor, train: np.ndarray, test: np.ndarray, split: str, with_labels: bool
) -> ImageTensorDataset:
    """The ``split`` (``"train"``, ``"test"`` or ``"all"``) of an image stack with fixed train/test indices."""
    check_split(split)
    if split == "all":
        return ImageTensorDataset(images.clone(), labels.clone(), with_labels=with_labels)
    index = torch.from_numpy(train if split == "train" else test)
    return ImageTensorDataset(images[index], labels[index], with_labels=with_labels)
