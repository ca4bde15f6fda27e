"""Limited-angle computed tomography: the parallel-beam Radon transform as a linear operator.

References: A. C. Kak and M. Slaney (1988), "Principles of Computerized Tomographic Imaging";
K. Kothari, A. Khorashadizadeh, M. de Hoop, I. Dokmanić (2021), "Trumpets: Injective Flows for
Inference and Inverse Problems" (30 angles in [30°, 150°], a 60° missing wedge).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .._checks import as_image_shape, check_int
from .base import LinearOperator, cgls, check_input
from .radon import (
    DEFAULT_MEMORY_BUDGET,
    AstraBackend,
    GridBackend,
    MatrixBackend,
    ParallelGeometry,
    RadonBackend,
    TorchRadonBackend,
    default_cache_dir,
    linear_apply,
    matrix_memory_bytes,
)

BACKENDS = ("auto", "matrix", "grid", "astra", "torch-radon")


def default_angles(n: int = 30, first: float = 30.0, last: float = 150.0) -> np.ndarray:
    """``n`` angles (degrees) evenly spaced in ``[first, last]``: the papers' 60° missing wedge.

    Example:
        >>> default_angles(5).tolist()
        [30.0, 60.0, 90.0, 120.0, 150.0]
    """
    return np.linspace(first, last, n)


def check_angles(angles: object) -> tuple[float, ...]:
    """Validate projection angles in degrees: a non-empty 1-D finite sequence in ``[0, 180)``.

    Example:
        >>> check_angles([0, 45.5])
        (0.0, 45.5)
        >>> check_angles([190.0])
        Traceback (most recent call last):
        ...
        ValueError: angles: expected degrees in [0, 180), got [190.0] (fold with angle % 180)
    """
    if isinstance(angles, torch.Tensor):
        angles = angles.detach().cpu().numpy()
    try:
        arr = np.asarray(angles, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"angles: expected a 1-D sequence of numbers (degrees), got {type(angles).__name__}") from None
    if arr.ndim != 1:
        raise ValueError(f"angles: expected a 1-D sequence (degrees), got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("angles: expected at least one angle, got an empty sequence")
    bad = arr[~(np.isfinite(arr) & (arr >= 0.0) & (arr < 180.0))]
    if bad.size:
        raise ValueError(f"angles: expected degrees in [0, 180), got {bad[:5].tolist()} (fold with angle % 180)")
    return tuple(float(a) for a in arr)


def ramp_filter(y: torch.Tensor) -> torch.Tensor:
    """Ram-Lak filtering of sinograms ``(..., D)`` along the detector axis (unit bin spacing).

    Convolution with the band-limited ramp kernel ``h[0] = 1/4``, ``h[k] = -1 / (pi k)^2`` for odd
    ``k`` and ``0`` for even ``k != 0``, done by FFT on a zero-padded length ``>= 2 D`` so the
    circular convolution equals the linear one over the detector.

    References: G. N. Ramachandran and A. V. Lakshminarayanan (1971), "Three-dimensional
    reconstruction from radiographs and electron micrographs: application of convolutions instead
    of Fourier transforms".

    Example:
        >>> y = torch.zeros(1, 5, dtype=torch.float64)
        >>> y[0, 2] = 1.0                      # a unit impulse returns the kernel itself
        >>> [round(v, 4) for v in ramp_filter(y)[0].tolist()]
        [0.0, -0.1013, 0.25, -0.1013, 0.0]
    """
    d = y.shape[-1]
    length = 1 << max(1, math.ceil(math.log2(2 * d)))
    k = torch.arange(length, device=y.device)
    k = torch.minimum(k, length - k).to(torch.float64)
    kernel = torch.where(k % 2 == 1, -1.0 / (math.pi * k.clamp_min(1)) ** 2, torch.zeros_like(k))
    kernel[0] = 0.25
    response = torch.fft.rfft(kernel).real.to(_real_dtype(y))
    filtered = torch.fft.irfft(torch.fft.rfft(y, n=length) * response, n=length)
    return filtered[..., :d].to(y.dtype)


def _real_dtype(y: torch.Tensor) -> torch.dtype:
    return y.dtype if y.dtype in (torch.float32, torch.float64) else torch.float32


class LimitedAngleCT(LinearOperator):
    """Parallel-beam CT: ``y = A x``, the discrete Radon transform of each channel.

    Args:
        in_shape: ``(C, N, N)``; every channel is projected independently.
        angles: projection angles in degrees, 1-D, each in ``[0, 180)``. Default: 30 angles evenly
            spaced in ``[30°, 150°]`` (a 60° missing wedge, the setup of the TRUMPET paper).
        n_detectors: detector bins ``D`` (unit spacing). Default ``N``, which covers the
            inscribed circle; ``ceil(N * sqrt(2))`` sees the whole square.
        backend: ``"matrix"``, ``"grid"``, ``"astra"``, ``"torch-radon"`` or ``"auto"``
            (``"matrix"`` when :func:`matrix_memory_bytes` fits ``memory_budget``, else ``"grid"``).
        memory_budget: bytes the ``"matrix"`` back-end may take (default 1 GiB; with 30 angles
            and ``D = N`` that admits images up to about 440 x 440).
        cache_dir: folder for an on-disk cache of the ``"matrix"`` system matrix; ``True`` picks
            :func:`default_cache_dir`; ``None`` (default) caches in memory only.

    Output shape ``(C, n_angles, D)``. Geometry conventions (rotation centre at pixel
    ``(N // 2, N // 2)``, ``s = x cos theta + y sin theta`` with ``x`` right and ``y`` up,
    detector bin ``j`` at ``s = j - D // 2``) and the mapping to scikit-image and astra are in
    :mod:`invprob.operators.radon.geometry`; :attr:`geometry` exposes the helpers.

    ``adjoint`` is the exact transpose of ``forward`` for ``"matrix"``, ``"grid"`` and CPU
    ``"astra"``. ``pinv`` is CGLS from 0 (minimum-norm least squares), run per sample and
    stopping when ``||A^T (y - A x)|| <= tol ||A^T y||`` or after ``max_iter`` iterations. ``fbp``
    is filtered back-projection. Every method is differentiable.

    The forward map is ``y[c, a, j] = (R x_c)(theta_a, s_j)``, the line integral
    ``(R f)(theta, s) = int f(s e_theta + t e_theta^perp) dt`` of each channel, discretised by
    bilinear interpolation at unit steps along each ray.

    References: A. C. Kak and M. Slaney (1988), "Principles of Computerized Tomographic Imaging";
    K. Kothari, A. Khorashadizadeh, M. de Hoop, I. Dokmanić (2021), "Trumpets: Injective Flows for
    Inference and Inverse Problems".

    Example:
        >>> op = LimitedAngleCT((1, 16, 16), angles=[30.0, 90.0, 150.0])
        >>> x = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
        >>> x[..., 6:10, 6:10] = 1.0
        >>> y = op(x)
        >>> y.shape, op.backend_name, round(float(y[0, 0, 1].sum()), 6)  # each angle sees the total mass
        (torch.Size([1, 1, 3, 16]), 'matrix', 16.0)
        >>> op.fbp(y).shape
        torch.Size([1, 1, 16, 16])
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (1, 64, 64),
        angles: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        n_detectors: int | None = None,
        backend: str = "auto",
        *,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        cache_dir: str | os.PathLike | bool | None = None,
    ) -> None:
        c, h, w = as_image_shape(in_shape)
        if h != w:
            raise ValueError(f"in_shape: expected a square image (C, N, N), got {(c, h, w)}")
        angles_t = check_angles(default_angles() if angles is None else angles)
        n_det = w if n_detectors is None else check_int(n_detectors, "n_detectors", minimum=1)
        memory_budget = check_int(memory_budget, "memory_budget", minimum=1)
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        self.geometry = ParallelGeometry(h, angles_t, n_det)
        super().__init__((c, h, w), (c, len(angles_t), n_det))
        self.backend = _make_backend(self.geometry, backend, memory_budget, _cache_dir(cache_dir))

    @property
    def angles(self) -> np.ndarray:
        """Projection angles in degrees."""
        return np.asarray(self.geometry.angles)

    @property
    def n_detectors(self) -> int:
        return self.geometry.n_detectors

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, *self.in_shape[1:])
        out = linear_apply(flat, self.backend.project, self.backend.backproject)
        return out.reshape(x.shape[0], *self.out_shape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        flat = y.reshape(-1, *self.out_shape[1:])
        out = linear_apply(flat, self.backend.backproject, self.backend.project)
        return out.reshape(y.shape[0], *self.in_shape)

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        """CGLS per sample, so each sample's stopping rule (and result) ignores the rest of the batch."""
        return torch.cat([cgls(self, y[i : i + 1], tol=tol, max_iter=max_iter) for i in range(y.shape[0])])

    def fbp(self, y: torch.Tensor) -> torch.Tensor:
        """Filtered back-projection ``x = (pi / n_angles) A^T (h * y)`` with the ramp filter ``h``.

        This discretises ``f(x) = int_0^pi (p_theta * h)(x . e_theta) d theta`` as if the angles
        covered ``[0°, 180°)`` evenly; with a missing wedge it is the usual (streaky, biased)
        limited-angle FBP, the customary initialiser.
        """
        y = check_input(y, self.out_shape, "y")
        return self.adjoint(ramp_filter(y)) * (math.pi / self.geometry.n_angles)

    def extra_repr(self) -> str:
        a = self.geometry.angles
        return (
            f"in_shape={self.in_shape}, n_angles={len(a)} in [{min(a):g}°, {max(a):g}°], "
            f"n_detectors={self.n_detectors}, backend={self.backend_name!r}"
        )


def _cache_dir(cache_dir: str | os.PathLike | bool | None) -> Path | None:
    if cache_dir is None or cache_dir is False:
        return None
    if cache_dir is True:
        return default_cache_dir()
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir: expected a path, True or None, got {type(cache_dir).__name__}")
    return Path(cache_dir)


def _make_backend(geom: ParallelGeometry, backend: str, budget: int, cache_dir: Path | None) -> RadonBackend:
    need = matrix_memory_bytes(geom)
    if backend == "auto":
        backend = "matrix" if need <= budget else "grid"
    if backend == "matrix":
        if need > budget:
            raise MemoryError(
                f"backend='matrix': the system matrix for {geom.size}x{geom.size} with {geom.n_angles} angles "
                f"and {geom.n_detectors} detectors may take {need / 2**20:.0f} MiB, over memory_budget "
                f"{budget / 2**20:.0f} MiB; use backend='grid' (matrix-free) or raise memory_budget"
            )
        return MatrixBackend(geom, cache_dir)
    if backend == "grid":
        return GridBackend(geom)
    if backend == "astra":
        return AstraBackend(geom)
    return TorchRadonBackend(geom)
