"""Single-slice DICOM CT images in Hounsfield units, mapped to a prior's ``[-1, 1]`` range.

:func:`read_dicom` decodes the pixel data with pydicom (the optional extra ``invprob[dicom]``,
imported only when a DICOM file is read) and applies the modality rescale
``HU = RescaleSlope * stored value + RescaleIntercept``. :func:`hu_to_signed` maps a Hounsfield
window ``[low, high]`` linearly onto ``[-1, 1]`` and clips outside it; the default window
:data:`DEFAULT_WINDOW` ``(-1000, 1000)`` sends air to -1, water to 0 and dense bone (1000 HU) to 1,
the range of the ellipse phantoms the CT prior was trained on (background -1).

Refused with a one-line ``ValueError``: files that are not DICOM, DICOM objects without pixel
data (e.g. structured reports), multi-frame files (give one slice), colour images, and pixel data
pydicom cannot decode (compressed transfer syntaxes without an installed decoder).

References:
    NEMA PS3.3 2023, "DICOM Part 3: Information Object Definitions", sec. C.11.1 (Modality LUT:
    Rescale Slope and Intercept) and C.7.6.6 (Multi-frame); Hounsfield 1973, "Computerized
    transverse axial scanning (tomography): Part 1" (British Journal of Radiology).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._checks import check_float

DEFAULT_WINDOW = (-1000.0, 1000.0)
"""Hounsfield units mapped to -1 and 1 by :func:`hu_to_signed`."""
EXTRA_HINT = "pip install 'invprob[dicom]'"


@dataclass
class DicomSlice:
    """One decoded slice: ``hu`` ``(H, W)`` float64 in Hounsfield units, and what the file says about it."""

    hu: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None
    description: str


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise ImportError(f"reading DICOM files needs pydicom, the optional extra [dicom]: {EXTRA_HINT}") from None
    return pydicom


def read_dicom(path: str | Path) -> DicomSlice:
    """Decode a single-slice DICOM image and rescale it to Hounsfield units (see the module docstring).

    Example:
        >>> read_dicom("missing.dcm")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: phantom: no such DICOM file 'missing.dcm'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"phantom: no such DICOM file {str(path)!r}")
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        raise ValueError(f"phantom: {path.name} is not a DICOM file (no DICM preamble)") from None
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"phantom: cannot read {path.name} as DICOM ({err})") from None
    if "PixelData" not in ds:
        kind = getattr(ds, "SOPClassUID", None)
        name = getattr(kind, "name", None) or str(kind or "unknown SOP class")
        raise ValueError(f"phantom: {path.name} holds no image (no PixelData element; {name})")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ValueError(f"phantom: {path.name} is a multi-frame DICOM with {frames} frames; give a single-slice file")
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise ValueError(f"phantom: {path.name} is a colour image ({ds.SamplesPerPixel} samples per pixel); "
                         "expected a greyscale CT slice")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        stored = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as err:  # pydicom raises RuntimeError, NotImplementedError or ValueError by decoder
        name = getattr(syntax, "name", None) or str(syntax)
        err = " ".join(str(err).split())
        raise ValueError(
            f"phantom: cannot decode the pixel data of {path.name} (transfer syntax {name}: {err}); install a decoder "
            "(e.g. pylibjpeg, python-gdcm) or export the slice uncompressed"
        ) from None
    if stored.ndim != 2:
        raise ValueError(f"phantom: {path.name} decodes to shape {stored.shape}; expected one 2-D slice")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    spacing = getattr(ds, "PixelSpacing", None)
    spacing_mm = (float(spacing[0]), float(spacing[1])) if spacing is not None and len(spacing) == 2 else None
    description = f"DICOM {path.name} ({getattr(ds, 'Modality', '?')}, {stored.shape[0]}x{stored.shape[1]})"
    return DicomSlice(stored * slope + intercept, spacing_mm, description)


def hu_to_signed(hu: np.ndarray, window: tuple[float, float] = DEFAULT_WINDOW) -> np.ndarray:
    """Map Hounsfield units linearly from ``window = (low, high)`` onto ``[-1, 1]``, clipping outside.

    Example:
        >>> hu_to_signed(np.array([-2000.0, -1000.0, 0.0, 500.0, 3000.0])).tolist()
        [-1.0, -1.0, 0.0, 0.5, 1.0]
    """
    low, high = (check_float(w, "window") for w in window)
    if not high > low:
        raise ValueError(f"window: expected (low, high) Hounsfield units with low < high, got {window!r}")
    return np.clip(2.0 * (np.asarray(hu, dtype=np.float64) - low) / (high - low) - 1.0, -1.0, 1.0)
