"""Users' own images: a folder of PNG/JPEG files, or a ``.npy``/``.npz`` array file.

Both loaders read everything into memory once and split it with a seeded permutation:
``round(test_fraction * N)`` images (default 10 %) form the test split, chosen as in
:func:`invprob.data.base.seeded_split`; ``split="all"`` keeps every image in file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from skimage.color import rgb2gray
from skimage.io import imread
from skimage.util import img_as_float64

from .base import ImageTensorDataset, as_size, resize_stack, select_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SIGNATURES = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}


def folder_dataset(
    path: str | Path,
    split: str = "train",
    *,
    size: int | tuple[int, int] | None = None,
    channels: int = 1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> ImageTensorDataset:
    """The PNG/JPEG files directly inside ``path`` (sorted by name), as ``(channels, H, W)`` images.

    Args:
        path: the directory; subdirectories and other files are ignored.
        split: ``"train"``, ``"test"`` or ``"all"`` (see the module docstring).
        size: resize every image (anti-aliased, bilinear) to ``n x n`` or ``(H, W)``. Without it,
            all images must already share one size.
        channels: 1 (colour images are converted to luminance) or 3 (grayscale images are
            repeated); an alpha channel is dropped.
        test_fraction: share of the images in the test split.
        seed: seed of the split permutation.

    Pixel values are scaled by their integer type's maximum (255 for 8-bit files) to ``[0, 1]``
    and then mapped to ``[-1, 1]``.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 (grayscale) or 3 (RGB), got {channels!r}")
    files = image_files(path)
    images = [_read_image(f, channels) for f in files]
    target = as_size(size) if size is not None else _common_size(images, files)
    stack = np.stack([resize_stack(im[None], target)[0] for im in images])
    index = _nonempty_split(len(stack), split, test_fraction, seed, f"{len(stack)} images in {str(path)!r}")
    return ImageTensorDataset(_to_signed(stack[index]))


def _nonempty_split(n: int, split: str, test_fraction: float, seed: int, what: str) -> np.ndarray:
    """:func:`select_split`, or ``ValueError`` saying the split of ``what`` is empty."""
    index = select_split(n, split, test_fraction, seed)
    if len(index) == 0:
        n_test = int(round(test_fraction * n))
        raise ValueError(
            f"split: the {split!r} split of the {what} is empty (test_fraction={test_fraction:g} puts "
            f"round({test_fraction:g} x {n}) = {n_test} of them in 'test'); use split='all' or change test_fraction"
        )
    return index


def image_files(path: str | Path) -> list[Path]:
    """The image files (by suffix, case-insensitive) directly inside ``path``, sorted by name."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"path: {str(folder)!r} is not a directory")
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"path: no image files ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}")
    return files


def _read_image(file: Path, channels: int) -> np.ndarray:
    """Read one file as a ``(channels, H, W)`` float64 array in ``[0, 1]``; ``ValueError`` naming an unreadable file."""
    with open(file, "rb") as handle:
        head = handle.read(8)
    kind = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(file.suffix.lower(), "")
    if kind and not head.startswith(_SIGNATURES[kind]):
        raise ValueError(f"{file}: expected a {kind} image (by its name), but the file does not start like one (first bytes {head!r})")
    try:
        image = img_as_float64(imread(file))
    except Exception as err:  # PIL and imageio raise many types for a damaged file
        raise ValueError(f"{file}: cannot be decoded as {'a ' + kind if kind else 'an'} image ({type(err).__name__})") from None
    if image.ndim == 3 and image.shape[2] in (2, 4):
        image = image[..., :-1]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[None], channels, axis=0)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{file.name}: unsupported image layout {image.shape}")
    if channels == 1:
        return rgb2gray(image)[None]
    return image.transpose(2, 0, 1)


def _common_size(images: list[np.ndarray], files: list[Path]) -> tuple[int, int]:
    sizes: dict[tuple[int, int], str] = {}
    for image, file in zip(images, files):
        sizes.setdefault(image.shape[1:], file.name)
    if len(sizes) > 1:
        found = ", ".join(f"{h}x{w} (e.g. {name})" for (h, w), name in sizes.items())
        raise ValueError(f"images have different sizes: {found}; pass size=... to resize them all")
    return next(iter(sizes))


def array_dataset(
    path: str | Path,
    split: str = "train",
    *,
    key: str | None = None,
    value_range: tuple[float, float] | None = None,
    size: int | tuple[int, int] | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> ImageTensorDataset:
    """Images stored in a ``.npy`` or ``.npz`` file as ``(N, H, W)`` or ``(N, C, H, W)``.

    Args:
        path: the file.
        split: ``"train"``, ``"test"`` or ``"all"`` (see the module docstring).
        key: which array of an ``.npz`` file; may be left out when the file holds one array.
        value_range: ``(low, high)`` mapped to ``[-1, 1]``, values outside it clipped. The default
            is the minimum and maximum of the whole file (all splits), so both splits share one map.
        size: resize every image (anti-aliased, bilinear) to ``n x n`` or ``(H, W)``.
        test_fraction: share of the images in the test split.
        seed: seed of the split permutation.
    """
    data = _load_array(Path(path), key)
    if data.ndim == 3:
        data = data[:, None]
    real = np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)
    if data.ndim != 4 or not real:
        raise ValueError(
            f"{Path(path).name}: expected a real array of shape (N, H, W) or (N, C, H, W), "
            f"got {data.dtype} {data.shape}"
        )
    if not np.isfinite(data).all():
        raise ValueError(f"{Path(path).name}: the array holds NaN or Inf values")
    low, high = _value_range(data, value_range)
    unit = np.clip((data.astype(np.float64) - low) / (high - low), 0.0, 1.0)
    if size is not None:
        unit = resize_stack(unit, as_size(size))
    index = _nonempty_split(len(unit), split, test_fraction, seed, f"{len(unit)} images in {Path(path).name}")
    return ImageTensorDataset(_to_signed(unit[index]))


def _load_array(path: Path, key: str | None) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"path: no file {str(path)!r}")
    if path.suffix.lower() == ".npy":
        if key is not None:
            raise ValueError("key: only .npz files hold named arrays")
        return np.load(path, allow_pickle=False)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"path: expected a .npy or .npz file, got {path.name!r}")
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.keys())
        if key is None and len(names) == 1:
            key = names[0]
        if key not in names:
            raise ValueError(f"key: {path.name} holds arrays {names}; got key={key!r}")
        return archive[key]


def _value_range(data: np.ndarray, value_range: tuple[float, float] | None) -> tuple[float, float]:
    if value_range is None:
        if data.size == 0:
            raise ValueError("the array holds no images")
        low, high = float(data.min()), float(data.max())
        if not low < high:
            raise ValueError(f"the array is constant ({low}); pass value_range=(low, high)")
        return low, high
    low, high = (float(v) for v in value_range)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"value_range: expected finite (low, high) with low < high, got {value_range!r}")
    return low, high


def _to_signed(unit: np.ndarray) -> torch.Tensor:
    """Map ``[0, 1]`` images to ``[-1, 1]`` float32, clipping the rounding errors of resizing."""
    return torch.from_numpy((np.clip(unit, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32))


def read_image(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """Read one image (PNG/JPEG, or a ``.npy`` array already in ``[-1, 1]``) as a ``shape`` tensor.

    Pictures are converted to ``shape[0]`` channels, resized to ``shape[1:]`` with anti-aliasing
    and mapped from ``[0, 1]`` to ``[-1, 1]``. A ``.npy`` file must hold ``(H, W)`` or ``(C, H, W)``
    of exactly that size.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image: no such file {str(path)!r}")
    channels, height, width = shape
    if path.suffix.lower() == ".npy":
        array = np.load(path)
        array = array[None] if array.ndim == 2 else array
        if array.shape != tuple(shape):
            raise ValueError(f"image: {path.name} holds an array of shape {array.shape}, expected {tuple(shape)}")
        return torch.from_numpy(array.astype(np.float32))
    try:
        unit = _read_image(path, channels)
    except ValueError as err:
        raise ValueError(f"image: {err}") from None
    return _to_signed(resize_stack(unit[None], (height, width))[0])


def write_image(path: str | Path, image: torch.Tensor) -> Path:
    """Save a ``(C, H, W)`` image in ``[-1, 1]`` as an 8-bit PNG (values outside are clipped)."""
    from skimage.io import imsave

    array = ((image.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    path = Path(path)
    imsave(path, array, check_contrast=False)
    return path
