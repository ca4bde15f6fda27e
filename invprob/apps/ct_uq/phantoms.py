"""Ground truths of the CT workflow: the phantom to reconstruct, the evaluation set and the calibration set.

Sources: ellipse test phantoms by index, scikit-image's Shepp-Logan phantom, pictures, ``.npy``
arrays, tensors and single-slice DICOM files (:mod:`invprob.data.dicom`: Hounsfield units, then
a window onto ``[-1, 1]``). The evaluation pool is the ellipse test split (indices 0-99); the
calibration set is drawn from the same test stream at indices 100 and above
(:data:`~invprob.apps.ct_uq.settings.CALIBRATION_OFFSET`), so the two never share a phantom and
are exchangeable draws of one distribution.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..._checks import check_int, to_tensor
from ...data import load_dataset, read_image
from ...data.base import resize_stack
from ...data.dicom import DEFAULT_WINDOW, hu_to_signed, read_dicom
from .settings import CALIBRATION_OFFSET, N_TEST_ELLIPSES

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
MAX_SILENT_RESIZE = 2.0
"""A picture or DICOM slice resized by more than this factor per side gets a warning."""


def load_phantom(
    source: str | Path | torch.Tensor | np.ndarray,
    shape: tuple[int, int, int],
    *,
    window: tuple[float, float] = DEFAULT_WINDOW,
) -> tuple[torch.Tensor, str]:
    """The ground truth ``(C, N, N)`` and a description, from one of:

    - ``"ellipses:K"`` (``"ellipses"`` is ``K = 0``): test phantom ``K`` (0-99) of the ellipse set;
    - ``"shepp-logan"``: scikit-image's Shepp-Logan phantom;
    - a single-slice DICOM file (``.dcm``, ``.dicom``, ``.ima``): Hounsfield units mapped from
      ``window`` onto ``[-1, 1]`` (:func:`invprob.data.dicom.hu_to_signed`), resized to ``N x N``;
    - a PNG/JPEG picture (converted to ``C`` channels, resized to ``N x N``) or a ``.npy`` array
      ``(N, N)`` / ``(C, N, N)`` with values in ``[-1, 1]``;
    - a tensor or array ``(N, N)`` / ``(C, N, N)``.

    The image must be square and (after conversion) of the prior's ``shape``; resizing by more
    than :data:`MAX_SILENT_RESIZE` per side warns.

    Example:
        >>> truth, label = load_phantom("ellipses:2", (1, 32, 32))
        >>> tuple(truth.shape), label
        ((1, 32, 32), 'ellipses test phantom 2')
    """
    c, n, _ = shape
    if isinstance(source, (torch.Tensor, np.ndarray)):
        x = to_tensor(source, "phantom").float()
        x = x.unsqueeze(0) if x.dim() == 2 else x
        check_image_shape(tuple(x.shape), shape, "phantom")
        return x, f"array {tuple(x.shape)}"
    text = str(source)
    k = ellipse_index(text)
    if k is not None:
        check_single_channel(c, "ellipse phantoms")
        return load_dataset("ellipses", split="test", size=n)[k], f"ellipses test phantom {k}"
    if text == "shepp-logan":
        check_single_channel(c, "the Shepp-Logan phantom")
        return load_dataset("shepp-logan", size=n)[0], "Shepp-Logan phantom"
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(
            f"phantom: {text!r} is neither 'ellipses:K', 'shepp-logan' nor an existing image, .npy or DICOM file"
        )
    if path.suffix.lower() in DICOM_SUFFIXES:
        return _load_dicom(path, shape, window)
    raw = _file_image_shape(path)
    check_image_shape(raw, shape, f"phantom {path.name}", resizable=path.suffix.lower() != ".npy")
    _warn_resize(raw[-1], n, path.name)
    return read_image(path, shape), str(path)


def _load_dicom(path: Path, shape: tuple[int, int, int], window: tuple[float, float]) -> tuple[torch.Tensor, str]:
    c, n, _ = shape
    check_single_channel(c, "DICOM CT slices")
    dicom = read_dicom(path)
    check_image_shape(dicom.hu.shape, shape, f"phantom {path.name}", resizable=True)
    _warn_resize(dicom.hu.shape[-1], n, path.name)
    image = hu_to_signed(dicom.hu, window)[None, None]
    image = np.clip(resize_stack(image, (n, n))[0], -1.0, 1.0)
    return torch.from_numpy(image.astype(np.float32)), f"{dicom.description}, window {window[0]:g}..{window[1]:g} HU"


def _warn_resize(size: int, target: int, name: str) -> None:
    factor = max(size / target, target / size)
    if factor > MAX_SILENT_RESIZE:
        warnings.warn(f"phantom: {name} is resized from {size}x{size} to the prior's {target}x{target} "
                      f"(a factor {factor:.1f} per side); details finer than the prior's pixels are lost",
                      stacklevel=3)


def ellipse_index(source: object) -> int | None:
    """The test index ``K`` of a source ``"ellipses"`` / ``"ellipses:K"``; None for any other source."""
    if not isinstance(source, str):
        return None
    name, _, text = source.partition(":")
    if name != "ellipses":
        return None
    try:
        k = int(text) if text else 0
    except ValueError:
        raise ValueError(
            f"phantom: expected ellipses:K with an integer K in 0..{N_TEST_ELLIPSES - 1}, got {text!r}"
        ) from None
    if not 0 <= k < N_TEST_ELLIPSES:
        raise ValueError(f"phantom: ellipse test phantoms are numbered 0..{N_TEST_ELLIPSES - 1}, got {k}")
    return k


def check_single_channel(channels: int, what: str) -> None:
    if channels != 1:
        raise ValueError(f"prior: {what} have 1 channel, but the prior's images have {channels}")


def _file_image_shape(path: Path) -> tuple[int, ...]:
    """The array shape of a ``.npy`` file, or ``(H, W)`` of a picture, without converting it."""
    if path.suffix.lower() == ".npy":
        return tuple(np.load(path, mmap_mode="r").shape)
    from skimage.io import imread

    try:
        return tuple(imread(path).shape[:2])
    except (OSError, ValueError) as err:
        raise ValueError(f"phantom: cannot read {path.name} as an image ({err})") from None


def check_image_shape(got: tuple[int, ...], shape: tuple[int, int, int], name: str, resizable: bool = False) -> None:
    """Reject non-square images, and (unless a picture that will be resized) any shape but the prior's."""
    if len(got) not in (2, 3):
        raise ValueError(f"{name}: expected an image (N, N) or (C, N, N), got shape {got}")
    if got[-1] != got[-2]:
        raise ValueError(f"{name}: limited-angle CT needs a square image, got {got[-2]}x{got[-1]}")
    full = got if len(got) == 3 else (1, *got)
    if not resizable and full != tuple(shape):
        raise ValueError(f"{name}: image shape {full} does not match the prior's data_shape {tuple(shape)}")


def evaluation_phantoms(
    evaluation: int | torch.Tensor | np.ndarray, shape: tuple[int, int, int], exclude: int | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Ground truths ``(K, C, N, N)`` and labels of the evaluation set, on which coverage is measured.

    An int ``K`` takes the first ``K`` ellipse test phantoms (skipping index ``exclude``, the main
    phantom); a tensor or array gives the user's own images.
    """
    if isinstance(evaluation, (torch.Tensor, np.ndarray)):
        return _user_images(evaluation, shape, "evaluation")
    k = check_int(evaluation, "evaluation", minimum=0)
    indices = [i for i in range(N_TEST_ELLIPSES) if i != exclude][:k]
    if len(indices) < k:
        raise ValueError(f"evaluation: the ellipse test set has {len(indices)} other phantoms, asked for {k}")
    return _ellipses(indices, shape, "evaluation")


def calibration_phantoms(
    calibration: int | torch.Tensor | np.ndarray, shape: tuple[int, int, int]
) -> tuple[torch.Tensor, list[str]]:
    """Ground truths ``(K, C, N, N)`` and labels of the calibration set, disjoint from the evaluation pool.

    An int ``K``: ellipse test-stream phantoms ``100 .. 100 + K - 1``; a tensor or array: the user's images.
    """
    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        return _user_images(calibration, shape, "calibration")
    k = check_int(calibration, "calibrate", minimum=0)
    return _ellipses(range(CALIBRATION_OFFSET, CALIBRATION_OFFSET + k), shape, "calibration")


def _user_images(images: torch.Tensor | np.ndarray, shape: tuple[int, int, int], name: str) -> tuple[torch.Tensor, list[str]]:
    x = to_tensor(images, name).float()
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name}: expected images (K, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
    return x, [f"{name} image {i}" for i in range(x.shape[0])]


def _ellipses(indices, shape: tuple[int, int, int], name: str) -> tuple[torch.Tensor, list[str]]:
    indices = list(indices)
    if not indices:
        return torch.zeros(0, *shape), []
    check_single_channel(shape[0], f"ellipse {name} phantoms")
    data = load_dataset("ellipses", split="test", size=shape[-1])
    return torch.stack([data[i] for i in indices]), [f"ellipses test phantom {i}" for i in indices]
