"""Back-ends that apply a stored sparse ``A`` and ``A^T``: this project's matrix (``"matrix"``).

scipy CSR matrices are converted once per ``(device, dtype)`` to torch sparse CSR tensors and
applied as sparse-dense products; ``A^T`` is stored, so the adjoint is exact.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from .base import RadonBackend, compute_dtype
from .cache import system_matrix
from .geometry import ParallelGeometry


def to_torch_csr(matrix: sp.csr_matrix, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (int64 indices).

    scipy guarantees the CSR invariants, so torch's check is skipped; torch's "beta" notice for
    sparse CSR is silenced.

    Example:
        >>> t = to_torch_csr(sp.csr_matrix(np.eye(3)), torch.float32, "cpu")
        >>> t.layout, (t @ torch.ones(3, 1)).flatten().tolist()
        (torch.sparse_csr, [1.0, 1.0, 1.0])
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


class SparseMatrixBackend(RadonBackend):
    """Applies a stored ``A`` and ``A^T`` (scipy CSR) as torch sparse CSR products.

    Torch copies are made on first use for each ``(device, dtype)`` and kept.

    Example:
        >>> geom = ParallelGeometry(2, (0.0,), 2)
        >>> a = sp.csr_matrix(np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]))  # column sums
        >>> backend = SparseMatrixBackend(geom, a, a.T.tocsr())
        >>> backend.project(torch.ones(1, 2, 2)).tolist(), backend.backproject(torch.ones(1, 1, 2)).shape
        ([[[2.0, 2.0]]], torch.Size([1, 2, 2]))
    """

    def __init__(self, geom: ParallelGeometry, matrix: sp.csr_matrix, matrix_t: sp.csr_matrix) -> None:
        super().__init__(geom)
        self.matrix, self.matrix_t = matrix, matrix_t
        self._torch: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def _pair(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        dtype = compute_dtype(like.dtype)
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
    """``"matrix"``: this project's bilinear system matrix (:func:`.matrix.build_system_matrix`), cached.

    Example:
        >>> backend = MatrixBackend(ParallelGeometry(8, (0.0, 90.0), 8))
        >>> backend.project(torch.ones(1, 8, 8)).shape
        torch.Size([1, 2, 8])
    """

    name = "matrix"

    def __init__(self, geom: ParallelGeometry, cache_dir: Path | None = None) -> None:
        super().__init__(geom, *system_matrix(geom, cache_dir))
