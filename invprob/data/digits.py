"""The handwritten digits scikit-learn ships, upsampled to 32x32.

``sklearn.datasets.load_digits`` holds 1,797 grayscale 8x8 images with integer values 0-16. They
are resized to 32x32 (bilinear, ``anti_aliasing=True``), divided by 16 and mapped to ``[-1, 1]``.

The split is fixed: ``numpy.random.default_rng(DIGITS_SPLIT_SEED).permutation(1797)``; its first
297 entries are the test images and the other 1,500 the training images (both kept in the
original order of the file). The resized stack is computed once per process and cached.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .base import ImageTensorDataset, split_images, resize_stack, seeded_split

DIGITS_SPLIT_SEED = 0
DIGITS_N_TEST = 297
DIGITS_SIZE = 32


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """All 1,797 images as ``(N, 1, 32, 32)`` in [-1, 1], their labels, and the split indices."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes about 1.5 s to import

    bunch = load_digits()
    raw = bunch.images.astype(np.float64)[:, None] / 16.0
    images = np.clip(resize_stack(raw, (DIGITS_SIZE, DIGITS_SIZE)), 0.0, 1.0) * 2.0 - 1.0
    train, test = seeded_split(len(raw), DIGITS_N_TEST, DIGITS_SPLIT_SEED)
    return (
        torch.from_numpy(images.astype(np.float32)),
        torch.from_numpy(bunch.target.astype(np.int64)),
        train,
        test,
    )


def digits_dataset(split: str = "train", *, with_labels: bool = False) -> ImageTensorDataset:
    """The scikit-learn digits as ``(1, 32, 32)`` float32 images in ``[-1, 1]``.

    Args:
        split: ``"train"`` (1,500 images), ``"test"`` (297) or ``"all"`` (1,797).
        with_labels: if true, items are ``(image, label)`` pairs; the labels (0-9) are always
            available as the ``labels`` attribute.
    """
    return split_images(*_digits_arrays(), split, with_labels)
