"""Parallel-beam Radon transform: the geometry and the back-ends behind :class:`LimitedAngleCT`.

Geometry (:class:`ParallelGeometry`), the conventions every back-end follows
---------------------------------------------------------------------------
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
farthest corner), the image being zero outside its pixels. This is a linear map ``y = A x`` with
at most four non-zeros per sample. ``"matrix"`` stores ``A`` and ``A^T``; ``"grid"`` computes the
same ``A`` matrix-free; ``"astra"`` uses astra's ``linear`` (Joseph) discretisation of the same
geometry (within 1% on smooth images); ``"torch-radon"`` wraps that package's own projector.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

DEFAULT_MEMORY_BUDGET = 2**30
"""Bytes the ``"matrix"`` back-end may use (upper bound, see :func:`matrix_memory_bytes`)."""

GRID_CHUNK_BYTES = 2**28
"""Largest intermediate ray-sample tensor the ``"grid"`` back-end allocates at once."""

_MATRIX_FORMAT = "bilinear-unit-step-v1"
_MEMORY_CACHE_SIZE = 8


@dataclass(frozen=True)
class ParallelGeometry:
    """A 2-D parallel-beam geometry: image ``size``, ``angles`` (degrees) and ``n_detectors``.

    See the module docstring for the conventions. The helpers :meth:`skimage_sinogram` and
    :meth:`astra_geometries` state and apply the mapping to scikit-image and astra-toolbox.
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
        h = hashlib.sha256(f"{_MATRIX_FORMAT}|{self.size}|{self.n_detectors}|".encode())
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
        """
        astra = import_astra()
        n, c = self.size, self.centre
        vol = astra.create_vol_geom(n, n, -c - 0.5, n - c - 0.5, -(n - c - 0.5), c + 0.5)
        vectors = np.zeros((self.n_angles, 6))
        theta = np.deg2rad(np.asarray(self.angles, dtype=np.float64))
        cos, sin = np.cos(theta), np.sin(theta)
        shift = (self.n_detectors - 1) / 2 - self.n_detectors // 2
        vectors[:, 0], vectors[:, 1] = -sin, cos
        vectors[:, 2], vectors[:, 3] = shift * cos, shift * sin
        vectors[:, 4], vectors[:, 5] = cos, sin
        return vol, astra.create_proj_geom("parallel_vec", self.n_detectors, vectors)


def matrix_nnz_bound(geom: ParallelGeometry) -> int:
    """Upper bound on the non-zeros of ``A``: four per ray sample inside the image's chord."""
    chord = math.ceil(geom.size * math.sqrt(2.0)) + 2
    return 4 * geom.n_angles * geom.n_detectors * min(chord, 2 * geom.half_length + 1)


def matrix_memory_bytes(geom: ParallelGeometry) -> int:
    """Upper bound on the bytes of ``A`` and ``A^T`` stored as float64 CSR with int64 indices."""
    rows = geom.n_angles * geom.n_detectors
    cols = geom.size * geom.size
    return 16 * 2 * matrix_nnz_bound(geom) + 8 * (rows + cols + 2)


def build_system_matrix(geom: ParallelGeometry, max_entries: int = 2**22) -> sp.csr_matrix:
    """Assemble ``A`` (rows ``angle * D + bin``, columns ``row * N + col``) as float64 CSR.

    Vectorised over all samples of a block of angles; blocks keep the temporary arrays near
    ``max_entries`` elements. Each sample at ``(u, v)`` adds the bilinear weights
    ``(1 - fu)(1 - fv), fu (1 - fv), (1 - fu) fv, fu fv`` to its four neighbouring pixels that lie
    inside the image; duplicates (pixels shared by consecutive samples) are summed.
    """
    n, d, m = geom.size, geom.n_detectors, len(geom.ray_steps())
    per_angle = 4 * d * m
    step = max(1, max_entries // per_angle)
    blocks = []
    for start in range(0, geom.n_angles, step):
        u, v = geom.sample_points(slice(start, start + step))
        rows = (start * d + np.arange(u.shape[0] * d)).reshape(u.shape[0], d, 1)
        blocks.append(_bilinear_triplets(u, v, np.broadcast_to(rows, u.shape), n))
    rows, cols, vals = (np.concatenate(parts) for parts in zip(*blocks))
    shape = (geom.n_angles * d, n * n)
    matrix = sp.coo_matrix((vals, (rows, cols)), shape=shape).tocsr()
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def _bilinear_triplets(u: np.ndarray, v: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """``(row, pixel, weight)`` triplets of the bilinear stencils at ``(u, v)`` inside the image."""
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = u - u0, v - v0
    u0, v0 = u0.astype(np.int64), v0.astype(np.int64)
    out_r, out_c, out_w = [], [], []
    for dv, du, w in ((0, 0, (1 - fv) * (1 - fu)), (0, 1, (1 - fv) * fu), (1, 0, fv * (1 - fu)), (1, 1, fv * fu)):
        cu, cv = u0 + du, v0 + dv
        keep = (cu >= 0) & (cu < n) & (cv >= 0) & (cv < n) & (w != 0)
        out_r.append(rows[keep])
        out_c.append(cv[keep] * n + cu[keep])
        out_w.append(w[keep])
    return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_w)


_MEMORY_CACHE: OrderedDict[ParallelGeometry, tuple[sp.csr_matrix, sp.csr_matrix]] = OrderedDict()


def default_cache_dir() -> Path:
    """``$INVPROB_CACHE_DIR`` or ``$XDG_CACHE_HOME/invprob`` (``~/.cache/invprob``) + ``/ct``."""
    root = os.environ.get("INVPROB_CACHE_DIR")
    if root is None:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "invprob")
    return Path(root) / "ct"


def system_matrix(geom: ParallelGeometry, cache_dir: Path | None = None) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``(A, A^T)`` for ``geom``: from the in-memory cache, else ``cache_dir``, else built.

    The in-memory cache keeps the last few geometries. With ``cache_dir`` a built matrix is saved
    as ``ct-<key>.npz``, written to a temporary file in the same folder and renamed into place, so
    concurrent processes never read a partial file.
    """
    if geom in _MEMORY_CACHE:
        _MEMORY_CACHE.move_to_end(geom)
        return _MEMORY_CACHE[geom]
    path = None if cache_dir is None else Path(cache_dir) / f"ct-{geom.key()}.npz"
    if path is not None and path.exists():
        matrix = sp.load_npz(path).tocsr()
    else:
        matrix = build_system_matrix(geom)
        if path is not None:
            _save_atomic(matrix, path)
    pair = (matrix, matrix.T.tocsr())
    _MEMORY_CACHE[geom] = pair
    while len(_MEMORY_CACHE) > _MEMORY_CACHE_SIZE:
        _MEMORY_CACHE.popitem(last=False)
    return pair


def _save_atomic(matrix: sp.csr_matrix, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            sp.save_npz(fh, matrix, compressed=False)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def to_torch_csr(matrix: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (int64 indices).

    scipy guarantees the CSR invariants, so torch's check is skipped; torch's "beta" notice for
    sparse CSR is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        tensor = torch.sparse_csr_tensor(
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data),
            size=matrix.shape,
            check_invariants=False,
        )
    return tensor.to(device=device, dtype=dtype)


class _Linear(torch.autograd.Function):
    """``apply(x, f, g)`` = ``f(x)`` for a linear ``f`` whose transpose is ``g``.

    The backward pass is ``apply(grad, g, f)``, so gradients of any order use the back-end's own
    transpose instead of tracing through it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, f: Callable, g: Callable) -> torch.Tensor:  # type: ignore[override]
        ctx.pair = (f, g)
        return f(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        f, g = ctx.pair
        return _Linear.apply(grad, g, f), None, None


def linear_apply(x: torch.Tensor, f: Callable, g: Callable) -> torch.Tensor:
    """Apply the linear map ``f`` (transpose ``g``) differentiably."""
    return _Linear.apply(x, f, g)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class RadonBackend:
    """Interface: ``project`` maps images ``(K, N, N)`` to sinograms ``(K, A, D)``; ``backproject``
    is its exact transpose. Neither needs to track gradients (the operator wraps them)."""

    name = "base"

    def __init__(self, geom: ParallelGeometry) -> None:
        self.geom = geom

    def project(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SparseMatrixBackend(RadonBackend):
    """Applies a stored ``A`` and ``A^T`` (scipy CSR) as torch sparse CSR products.

    Torch copies are made on first use for each ``(device, dtype)`` and kept.
    """

    def __init__(self, geom: ParallelGeometry, matrix: sp.csr_matrix, matrix_t: sp.csr_matrix) -> None:
        super().__init__(geom)
        self.matrix, self.matrix_t = matrix, matrix_t
        self._torch: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _pair(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        dtype = _compute_dtype(like.dtype)
        key = (like.device, dtype)
        if key not in self._torch:
            self._torch[key] = (to_torch_csr(self.matrix, dtype, like.device), to_torch_csr(self.matrix_t, dtype, like.device))
        return (*self._torch[key], dtype)

    @staticmethod
    def _apply(matrix: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        columns = x.reshape(x.shape[0], -1).to(dtype).T.contiguous()
        return (matrix @ columns).T.to(x.dtype)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        a, _, dtype = self._pair(x)
        return self._apply(a, x, dtype).reshape(x.shape[0], self.geom.n_angles, self.geom.n_detectors)

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        _, at, dtype = self._pair(y)
        return self._apply(at, y, dtype).reshape(y.shape[0], self.geom.size, self.geom.size)


class MatrixBackend(SparseMatrixBackend):
    """``"matrix"``: this project's bilinear system matrix (:func:`build_system_matrix`)."""

    name = "matrix"

    def __init__(self, geom: ParallelGeometry, cache_dir: Path | None = None) -> None:
        super().__init__(geom, *system_matrix(geom, cache_dir))


class GridBackend(RadonBackend):
    """``"grid"``: matrix-free ray sampling with ``grid_sample`` (bilinear, zeros outside).

    Computes the same ``A`` as :class:`MatrixBackend` without storing it: the ray samples of a
    block of angles are interpolated and summed along each ray. ``A^T`` is the vector-Jacobian
    product of that map (autograd's scatter of the bilinear weights), hence exact. Angle blocks
    keep the intermediate ``(K, A_block * D, M)`` tensor under :data:`GRID_CHUNK_BYTES`.
    """

    name = "grid"

    def __init__(self, geom: ParallelGeometry) -> None:
        super().__init__(geom)
        u, v = geom.sample_points()
        scale = 2.0 / max(geom.size - 1, 1)
        self._grid64 = torch.from_numpy(np.stack([u * scale - 1.0, v * scale - 1.0], axis=-1))
        self._grids: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _grid(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._grids:
            self._grids[key] = self._grid64.to(device=like.device, dtype=like.dtype)
        return self._grids[key]

    def _blocks(self, k: int, itemsize: int) -> list[slice]:
        per_angle = k * self.geom.n_detectors * self._grid64.shape[2] * itemsize
        step = max(1, GRID_CHUNK_BYTES // max(per_angle, 1))
        return [slice(a, a + step) for a in range(0, self.geom.n_angles, step)]

    def _sample(self, image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        a, d, m, _ = grid.shape
        out = F.grid_sample(image, grid.reshape(1, a * d, m, 2), mode="bilinear", padding_mode="zeros", align_corners=True)
        return out.sum(-1).reshape(image.shape[1], a, d)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(x.dtype)
        image = x.to(dtype).unsqueeze(0)
        grid = self._grid(image)
        parts = [self._sample(image, grid[b]) for b in self._blocks(x.shape[0], image.element_size())]
        return torch.cat(parts, dim=1).to(x.dtype)

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(y.dtype)
        k, n = y.shape[0], self.geom.size
        sino = y.to(dtype)
        grid = self._grid(sino)
        out = torch.zeros((k, n, n), dtype=dtype, device=y.device)
        with torch.enable_grad():
            for b in self._blocks(k, sino.element_size()):
                probe = torch.zeros((1, k, n, n), dtype=dtype, device=y.device, requires_grad=True)
                (grad,) = torch.autograd.grad(self._sample(probe, grid[b]), probe, sino[:, b])
                out += grad[0]
        return out.to(y.dtype)


def import_astra():
    """Import astra-toolbox lazily, with an install hint when it is missing."""
    try:
        import astra
    except ImportError as err:
        raise ImportError(
            "backend='astra' needs astra-toolbox: pip install 'invprob[astra]' "
            "(or pip install astra-toolbox / conda install -c astra-toolbox astra-toolbox)"
        ) from err
    return astra


def astra_matrix(geom: ParallelGeometry) -> sp.csr_matrix:
    """astra's CPU ``linear`` (Joseph) projector matrix for ``geom`` as scipy CSR."""
    astra = import_astra()
    vol, proj = geom.astra_geometries()
    projector = astra.create_projector("linear", proj, vol)
    try:
        matrix_id = astra.projector.matrix(projector)
        try:
            matrix = astra.matrix.get(matrix_id).tocsr().astype(np.float64)
        finally:
            astra.matrix.delete(matrix_id)
    finally:
        astra.projector.delete(projector)
    return matrix


class AstraBackend(SparseMatrixBackend):
    """``"astra"``: astra-toolbox's projectors.

    On CPU tensors astra's ``linear`` projector matrix is applied as torch sparse CSR (exact
    transpose). On CUDA tensors, when astra was built with CUDA, astra's GPU forward and back
    projection run image by image (their pairing is adjoint up to astra's interpolation, about
    1e-6 relative).
    """

    name = "astra"

    def __init__(self, geom: ParallelGeometry) -> None:
        self.astra = import_astra()
        matrix = astra_matrix(geom)
        super().__init__(geom, matrix, matrix.T.tocsr())

    def _cuda(self, x: torch.Tensor) -> bool:
        return x.is_cuda and bool(self.astra.use_cuda())

    def _per_image(self, x: torch.Tensor, create: Callable) -> torch.Tensor:
        vol, proj = self.geom.astra_geometries()
        projector = self.astra.create_projector("cuda", proj, vol)
        outs = []
        try:
            for item in x.detach().to("cpu", torch.float32).numpy():
                data_id, data = create(item, projector)
                self.astra.data2d.delete(data_id)
                outs.append(torch.from_numpy(data))
        finally:
            self.astra.projector.delete(projector)
        return torch.stack(outs).to(device=x.device, dtype=x.dtype)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        if self._cuda(x):
            return self._per_image(x, self.astra.create_sino)
        return super().project(x)

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        if self._cuda(y):
            return self._per_image(y, self.astra.create_backprojection)
        return super().backproject(y)


def import_torch_radon():
    """Import torch-radon lazily, with an install hint when it is missing."""
    try:
        import torch_radon
    except ImportError as err:
        raise ImportError(
            "backend='torch-radon' needs the torch_radon package (CUDA only, not on PyPI): build it "
            "from https://github.com/matteo-ronchetti/torch-radon (git clone ... && make install), "
            "or use backend='matrix'"
        ) from err
    return torch_radon


class TorchRadonBackend(RadonBackend):
    """``"torch-radon"``: torch-radon's ``Radon(resolution, angles, det_count)`` (radians).

    Its ``forward`` is the projection and its ``backprojection`` the transpose; the operator's
    autograd uses that back-projection. Angles (converted to radians) and ``det_count`` are passed
    straight through and sinograms keep the ``(n_angles, det_count)`` layout shared with this
    module; torch-radon's own discretisation, angle origin and rotation centre are kept as they
    are. The adapter is tested against a stand-in with the same API; whether the real package's
    conventions coincide with this module's could not be checked here (it needs CUDA), so compare
    its sinograms with ``backend="matrix"`` once before mixing the two.
    """

    name = "torch-radon"

    def __init__(self, geom: ParallelGeometry) -> None:
        super().__init__(geom)
        module = import_torch_radon()
        angles = np.deg2rad(np.asarray(geom.angles, dtype=np.float64))
        self.radon = module.Radon(geom.size, angles, det_count=geom.n_detectors)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.radon.forward(x.contiguous())

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        return self.radon.backprojection(y.contiguous())
