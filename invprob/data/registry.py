"""``load_dataset``: every dataset of :mod:`invprob.data` by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from .digits import digits_dataset
from .ellipses import ellipses_dataset
from .files import array_dataset, folder_dataset
from .mnist import mnist_dataset
from .phantom import shepp_logan_dataset

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": digits_dataset,
    "mnist": mnist_dataset,
    "ellipses": ellipses_dataset,
    "shepp-logan": shepp_logan_dataset,
    "folder": folder_dataset,
    "array": array_dataset,
}


def list_datasets() -> list[str]:
    """The names :func:`load_dataset` accepts."""
    return list(_LOADERS)


def load_dataset(name: str, split: str = "train", **options: Any) -> Dataset:
    """Load a dataset of float32 ``(C, H, W)`` images in ``[-1, 1]`` by name.

    ========================  ==========================================================  ===========
    name                      contents                                                    splits
    ========================  ==========================================================  ===========
    ``"digits"``              scikit-learn's 1,797 8x8 digits enlarged to 1x32x32          1,500 / 297
                              (``with_labels``)
    ``"mnist"``               5,000 real MNIST digits padded to 1x32x32 (``with_labels``;  4,500 / 500
                              extra ``invprob[mnist]``)
    ``"ellipses"``            random-ellipse CT phantoms, 1x64x64 (``size``, ``seed``,     stream / 100
                              ``length``, ``n_ellipses``)
    ``"shepp-logan"``         scikit-image's head phantom, 1x64x64 (``size``)             1 image
    ``"folder"``              PNG/JPEG files (``path``, ``size``, ``channels``)            90 % / 10 %
    ``"array"``               ``.npy``/``.npz`` file (``path``, ``key``, ``value_range``)  90 % / 10 %
    ========================  ==========================================================  ===========

    Args:
        name: one of :func:`list_datasets`.
        split: ``"train"`` or ``"test"``; the finite datasets also accept ``"all"``.
        options: keyword options of the dataset's loader (``digits_dataset``, ``mnist_dataset``,
            ``ellipses_dataset``, ``shepp_logan_dataset``, ``folder_dataset``, ``array_dataset``).

    Raises:
        ValueError: unknown name or split. TypeError: an option the loader does not take.
    """
    loader = _LOADERS.get(name)  # type: ignore[arg-type]
    if loader is None:
        raise ValueError(f"name: unknown dataset {name!r}; valid names: {', '.join(map(repr, _LOADERS))}")
    parameters = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        valid = [p for p in parameters if p != "split"]
        raise TypeError(f"load_dataset({name!r}): unknown option(s) {unknown}; valid options: {valid}")
    return loader(split=split, **options)
