"""Datasets that need no download, and loaders for users' own images.

Every dataset yields ``torch.float32`` images of shape ``(C, H, W)`` with values in ``[-1, 1]``;
:func:`to_unit_range` maps them to ``[0, 1]`` for display and :func:`from_unit_range` back.

- :func:`load_dataset` — ``"digits"``, ``"mnist"``, ``"ellipses"``, ``"shepp-logan"``, ``"folder"``, ``"array"``
  by name, each with a fixed, seeded train/test split (documented in its module).
- :func:`from_torch_dataset` — wrap any dataset of tensors, arrays or PIL images.
- :func:`torchvision_dataset` — MNIST, CIFAR-10, CelebA, ... when torchvision is installed.
"""

from .augment import AffineAugmented
from .base import ImageTensorDataset, from_unit_range, to_unit_range
from .digits import DIGITS_SPLIT_SEED, digits_dataset
from .ellipses import EllipseDataset, ellipses_dataset
from .mnist import MNIST_SPLIT_SEED, mnist_dataset
from .files import array_dataset, folder_dataset, read_image, write_image
from .phantom import shepp_logan_dataset
from .registry import list_datasets, load_dataset
from .wrap import WrappedImageDataset, from_torch_dataset, torchvision_dataset

__all__ = [
    "AffineAugmented",
    "DIGITS_SPLIT_SEED",
    "EllipseDataset",
    "ImageTensorDataset",
    "WrappedImageDataset",
    "array_dataset",
    "digits_dataset",
    "ellipses_dataset",
    "folder_dataset",
    "mnist_dataset",
    "MNIST_SPLIT_SEED",
    "read_image",
    "write_image",
    "from_torch_dataset",
    "from_unit_range",
    "list_datasets",
    "load_dataset",
    "shepp_logan_dataset",
    "to_unit_range",
    "torchvision_dataset",
]
