"""The Shepp-Logan head phantom that scikit-image bundles, as a one-image dataset."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from skimage.data import shepp_logan_phantom

from .base import ImageTensorDataset, as_size, check_split, resize_stack


@lru_cache(maxsize=8)
def _phantom(size: tuple[int, int]) -> torch.Tensor:
    raw = shepp_logan_phantom().astype(np.float64)[None, None]
    image = np.clip(resize_stack(raw, size), 0.0, 1.0) * 2.0 - 1.0
    return torch.from_numpy(image.astype(np.float32))


def shepp_logan_dataset(split: str = "test", *, size: int | tuple[int, int] = 64) -> ImageTensorDataset:
    """scikit-image's 400x400 Shepp-Logan phantom resized (anti-aliased) to ``size``, in ``[-1, 1]``.

    It is a single test image, so every split (``"train"``, ``"test"``, ``"all"``) holds the same
    one item of shape ``(1, *size)``.
    """
    check_split(split)
    return ImageTensorDataset(_phantom(as_size(size)).clone())
