"""The 2-D parallel-beam geometry every Radon back-end follows.

Conventions
-----------
* Image: ``N x N`` pixels of unit size; pixel ``(row, col)`` has its centre at ``(col, row)``.
* Rotation centre: the pixel with index ``(N // 2, N // 2)`` (the geometric centre for odd ``N``,
  half a pixel below and right of it for even ``N``; this is scikit-image's choice).
* Axes: ``x = col - N // 2`` points right, ``y = N // 2 - row`` points up.
* Angles in degrees, ``0 <= theta < 180``. The projection at ``theta`` integrates along the
  direction ``(-sin theta, cos theta)`` and records the signed detector coordinate
  ``s = x cos theta + y sin theta``; at ``theta = 0`` rays run down the columns and ``s`` grows
  with the column index; ``theta`` turns counter-clockwise.
* Detector: ``D`` bins of unit spacing, bin ``j`` centred at ``s_j = j - D // 2``.
* Sinogram layout ``(n_angles, D)``: one row per angle.

Discretisation: the line integral ``p(theta, s) = int f(s e_theta + t e_theta^perp) dt`` is the
sum of bilinear interpolates of the image at unit steps ``t = -T, ..., T`` (``T`` reaches the
farthest corner), the image being zero outside its pixels: a linear map ``y = A x`` with at most
four non-zeros per sample.

References: A. C. Kak and M. Slaney (1988), "Principles of Computerized Tomographic Imaging";
P. M. Joseph (1982), "An improved algorithm for reprojecting rays through pixel images".
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ._optional import import_astra

MATRIX_FORMAT = "bilinear-unit-step-v1"
"""Name of the discretisation, part of :meth:`ParallelGeometry.key` (on-disk cache names)."""


@dataclass(frozen=True)
class ParallelGeometry:
    """A 2-D parallel-beam geometry: image ``size``, ``angles`` (degrees) and ``n_detectors``.

    See the module docstring for the conventions. :meth:`skimage_sinogram` and
    :meth:`astra_geometries` state and apply the mapping to scikit-image and astra-toolbox.

    References: A. C. Kak and M. Slaney (1988), "Principles of Computerized Tomographic Imaging".

    Example:
        >>> geom = ParallelGeometry(size=8, angles=(0.0, 90.0), n_detectors=8)
        >>> geom.centre, geom.n_angles, geom.detector_positions()[:3].tolist()
        (4, 2, [-4.0, -3.0, -2.0])
        >>> [a.shape for a in geom.sample_points()]
        [(2, 8, 15), (2, 8, 15)]
    """

    size: int
    angles: tuple[float, ...]
    n_detectors: int

    @property
    def centre(self) -> int:
        """Row and column index of the rotation centre, ``N // 2``."""
        return self.size // 2

    @property
    def n_angles(self) -> int:
        """Number of projection angles."""
        return len(self.angles)

    @property
    def half_length(self) -> int:
        """``T``: ray samples ``t = -T..T`` cover every pixel (and its bilinear support)."""
        return math.ceil(self.centre * math.sqrt(2.0)) + 1

    def detector_positions(self) -> np.ndarray:
        """Centres ``s_j = j - D // 2`` of the detector bins."""
        return np.arange(self.n_detectors, dtype=np.float64) - self.n_detectors // 2

    def ray_steps(self) -> np.ndarray:
        """Sample offsets ``t`` along each ray (unit steps)."""
        return np.arange(-self.half_length, self.half_length + 1, dtype=np.float64)

    def key(self) -> str:
        """A stable hex digest of the geometry and the discretisation (for on-disk caches)."""
        h = hashlib.sha256(f"{MATRIX_FORMAT}|{self.size}|{self.n_detectors}|".encode())
        h.update(np.asarray(self.angles, dtype=np.float64).tobytes())
        return h.hexdigest()[:32]

    def sample_points(self, angle_slice: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Column and row coordinates ``(u, v)`` of every ray sample, shape ``(A, D, M)``.

        ``u = c + s cos theta - t sin theta`` and ``v = c - s sin theta - t cos theta`` with
        ``c = N // 2``: the point ``s e_theta + t e_theta^perp`` in pixel-index coordinates.
        """
        theta = np.deg2rad(np.asarray(self.angles, dtype=np.float64)[angle_slice])[:, None, None]
        s = self.detector_positions()[None, :, None]
        t = self.ray_steps()[None, None, :]
        cos, sin = np.cos(theta), np.sin(theta)
        return self.centre + s * cos - t * sin, self.centre - s * sin - t * cos

    def skimage_sinogram(self, image: np.ndarray) -> np.ndarray:
        """This geometry's sinogram ``(n_angles, D)`` of ``image`` computed by ``skimage.transform.radon``.

        Mapping: scikit-image rotates about index ``P // 2`` of a square image of size ``P`` and
        returns ``(P, n_angles)`` with bin ``i`` at ``s = i - P // 2``, angles in degrees with the
        same origin and orientation as here. So the image is zero-padded to
        ``max(N, D)`` keeping its centre pixel at index ``max(N, D) // 2``, projected with
        ``circle=False`` (scikit-image pads further to the diagonal, keeping that centre), the
        result is transposed and the bins ``s_j`` are picked out. The two agree to rounding
        error for images that vanish in the outermost pixels of the corners, which
        scikit-image's diagonal padding leaves partly unsampled.

        References: S. van der Walt et al. (2014), "scikit-image: image processing in Python".
        """
        from skimage.transform import radon

        image = np.asarray(image, dtype=np.float64)
        if image.shape != (self.size, self.size):
            raise ValueError(f"image: expected shape {(self.size, self.size)}, got {image.shape}")
        p = max(self.size, self.n_detectors)
        before = p // 2 - self.centre
        padded = np.pad(image, ((before, p - self.size - before),) * 2)
        sino = radon(padded, theta=np.asarray(self.angles), circle=False).T
        first = sino.shape[1] // 2 - self.n_detectors // 2
        return sino[:, first : first + self.n_detectors]

    def astra_vectors(self) -> np.ndarray:
        """The ``(n_angles, 6)`` rows of astra's ``parallel_vec`` geometry (see :meth:`astra_geometries`)."""
        vectors = np.zeros((self.n_angles, 6))
        theta = np.deg2rad(np.asarray(self.angles, dtype=np.float64))
        cos, sin = np.cos(theta), np.sin(theta)
        shift = (self.n_detectors - 1) / 2 - self.n_detectors // 2
        vectors[:, 0], vectors[:, 1] = -sin, cos
        vectors[:, 2], vectors[:, 3] = shift * cos, shift * sin
        vectors[:, 4], vectors[:, 5] = cos, sin
        return vectors

    def astra_geometries(self) -> tuple[dict, dict]:
        """astra-toolbox ``(vol_geom, proj_geom)`` describing this geometry.

        Mapping: astra's rotation centre is its world origin, and its row 0 is the top of the
        window (largest ``y``); the window ``x in [-c - 1/2, N - c - 1/2]``,
        ``y in [-(N - c - 1/2), c + 1/2]`` (``c = N // 2``) puts the origin on pixel ``(c, c)``.
        Each angle becomes one ``parallel_vec`` row: ray direction ``(-sin theta, cos theta)``,
        detector unit vector ``(cos theta, sin theta)`` and detector centre
        ``((D - 1) / 2 - D // 2) (cos theta, sin theta)``, since astra centres its bins on the
        detector centre while bin ``j`` here sits at ``j - D // 2`` (half a bin apart for even
        ``D``). Needs astra-toolbox.

        References: W. van Aarle et al. (2016), "Fast and flexible X-ray tomography using the
        ASTRA toolbox".
        """
        astra = import_astra()
        n, c = self.size, self.centre
        vol = astra.create_vol_geom(n, n, -c - 0.5, n - c - 0.5, -(n - c - 0.5), c + 0.5)
        return vol, astra.create_proj_geom("parallel_vec", self.n_detectors, self.astra_vectors())
