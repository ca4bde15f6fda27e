"""Bring any image dataset into the package convention: float32 ``(C, H, W)`` in ``[-1, 1]``.

:func:`from_torch_dataset` wraps a dataset lazily (items are converted when read), so large
datasets such as CelebA are never held in memory. :func:`torchvision_dataset` builds a torchvision
dataset (MNIST, CIFAR10, ...) and wraps it; torchvision is imported only when it is called and is
not a dependency of invprob.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .base import as_size, check_split

_INT_RANGES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_LUMINANCE = (0.2125, 0.7154, 0.0721)


class WrappedImageDataset(Dataset):
    """A dataset whose items are converted on access; see :func:`from_torch_dataset`."""

    def __init__(
        self,
        dataset: Any,
        *,
        value_range: tuple[float, float] | None = None,
        channels: int | None = None,
        size: tuple[int, int] | None = None,
        with_labels: bool = False,
    ) -> None:
        if channels not in (None, 1, 3):
            raise ValueError(f"channels: expected None, 1 or 3, got {channels!r}")
        if value_range is not None and not float(value_range[0]) < float(value_range[1]):
            raise ValueError(f"value_range: expected (low, high) with low < high, got {value_range!r}")
        self.dataset = dataset
        self.value_range = value_range
        self.channels = channels
        self.size = size
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, Any]:
        image, label = _split_item(self.dataset[index])
        converted = self.convert(image)
        if not self.with_labels:
            return converted
        if label is None:
            raise ValueError(f"with_labels=True, but item {index} of the wrapped dataset has no label")
        return converted, int(label) if isinstance(label, (int, np.integer, torch.Tensor)) else label

    def convert(self, image: Any) -> torch.Tensor:
        """Convert one tensor, array or PIL image to a float32 ``(C, H, W)`` tensor in ``[-1, 1]``."""
        chw, low, high = _as_chw(image, self.value_range)
        x = ((chw - low) / (high - low)).clamp(0, 1)
        x = _set_channels(x, self.channels)
        if self.size is not None and tuple(x.shape[1:]) != self.size:
            x = F.interpolate(x[None], size=self.size, mode="bilinear", antialias=True)[0]
        return (x.clamp(0, 1) * 2 - 1).to(torch.float32).contiguous()


def _split_item(item: Any) -> tuple[Any, Any]:
    """``(image, label)`` of an item that is an image or an ``(image, label, ...)`` sequence."""
    if isinstance(item, (tuple, list)):
        return item[0], item[1] if len(item) > 1 else None
    return item, None


def _as_chw(image: Any, value_range: tuple[float, float] | None) -> tuple[torch.Tensor, float, float]:
    """The image as a float64 ``(C, H, W)`` tensor, with the range its values map from.

    Tensors are taken as ``(H, W)`` or ``(C, H, W)`` (torchvision's layout); arrays and PIL images
    as ``(H, W)`` or ``(H, W, C)``, an alpha channel dropped. Without ``value_range``, 8- and 16-bit
    integers span their type's range and floats span ``[0, 1]``.
    """
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        channels_last = False
    else:
        array = np.asarray(image)
        channels_last = True
    if array.dtype == np.bool_:
        array = array.astype(np.float64)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"expected an image tensor, array or PIL image, got {type(image).__name__}")
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and channels_last:
        array = array[..., :3].transpose(2, 0, 1) if array.shape[2] == 4 else array.transpose(2, 0, 1)
    elif array.ndim != 3:
        raise ValueError(f"expected an image of 2 or 3 dimensions, got shape {array.shape}")
    low, high = value_range if value_range is not None else _default_range(array.dtype)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)), float(low), float(high)


def _default_range(dtype: np.dtype) -> tuple[float, float]:
    if np.issubdtype(dtype, np.floating):
        return 0.0, 1.0
    if dtype in _INT_RANGES:
        return 0.0, _INT_RANGES[dtype]
    raise ValueError(f"cannot infer the value range of {dtype} images; pass value_range=(low, high)")


def _set_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    c = x.shape[0]
    if channels is None or channels == c:
        return x
    if channels == 3 and c == 1:
        return x.expand(3, -1, -1)
    if channels == 1 and c == 3:
        weights = torch.tensor(_LUMINANCE, dtype=x.dtype).view(3, 1, 1)
        return (x * weights).sum(0, keepdim=True)
    raise ValueError(f"cannot convert an image of {c} channels to {channels}")


def from_torch_dataset(
    dataset: Any,
    *,
    value_range: tuple[float, float] | None = None,
    channels: int | None = None,
    size: int | tuple[int, int] | None = None,
    with_labels: bool = False,
) -> WrappedImageDataset:
    """Wrap a dataset whose items are images or ``(image, label, ...)`` tuples.

    Images may be tensors (``(H, W)`` or ``(C, H, W)``), NumPy arrays or PIL images (``(H, W)`` or
    ``(H, W, C)``). Each item is converted when read.

    Args:
        dataset: anything with ``__len__`` and ``__getitem__``.
        value_range: ``(low, high)`` of the raw values, mapped to ``[-1, 1]`` and clipped. By default
            ``uint8`` images span ``[0, 255]``, ``uint16`` ``[0, 65535]`` and float images ``[0, 1]``
            (what torchvision's ``ToTensor`` produces).
        channels: ``None`` keeps the channels; 1 converts RGB to luminance; 3 repeats grayscale.
        size: resize (bilinear, anti-aliased) to ``n x n`` or ``(H, W)``.
        with_labels: return ``(image, label)`` pairs instead of images.
    """
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            "dataset: expected a map-style dataset with __len__ and __getitem__, "
            f"got {type(dataset).__name__}"
        )
    target = as_size(size) if size is not None else None
    return WrappedImageDataset(
        dataset, value_range=value_range, channels=channels, size=target, with_labels=with_labels
    )


def torchvision_dataset(
    name: str,
    root: str,
    split: str = "train",
    *,
    download: bool = False,
    value_range: tuple[float, float] | None = None,
    channels: int | None = None,
    size: int | tuple[int, int] | None = None,
    with_labels: bool = False,
    **options: Any,
) -> WrappedImageDataset:
    """A torchvision dataset (e.g. ``"MNIST"``, ``"CIFAR10"``, ``"CelebA"``) in the package convention.

    Args:
        name: the class name in ``torchvision.datasets``.
        root: the directory torchvision reads (and, with ``download=True``, downloads) the data to.
        split: ``"train"`` or ``"test"``, passed as ``train=`` or ``split=`` as the class expects
            (classes with a ``split=`` argument also accept their own names, e.g. ``"valid"``).
        download: let torchvision download missing files (needs internet).
        value_range, channels, size, with_labels: as in :func:`from_torch_dataset`.
        options: further keyword arguments for the torchvision class.

    Raises:
        ImportError: torchvision is not installed.
    """
    try:
        import torchvision.datasets as tv_datasets
    except ImportError as error:
        raise ImportError(
            "torchvision_dataset needs torchvision, which is not installed: `pip install torchvision`, "
            "or build the dataset yourself and wrap it with invprob.data.from_torch_dataset"
        ) from error
    cls = getattr(tv_datasets, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"name: torchvision.datasets has no dataset class {name!r}")
    parameters = inspect.signature(cls).parameters
    if "train" in parameters:
        options["train"] = check_split(split, ("train", "test")) == "train"
    elif "split" in parameters:
        options["split"] = split
    else:
        raise ValueError(f"{name} takes neither train= nor split=; build it and call from_torch_dataset")
    if "download" in parameters:
        options["download"] = download
    dataset = cls(root, **options)
    return from_torch_dataset(
        dataset, value_range=value_range, channels=channels, size=size, with_labels=with_labels
    )
