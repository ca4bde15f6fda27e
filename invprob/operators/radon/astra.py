"""``"astra"``: astra-toolbox's projectors for the same geometry (imported only when used).

On CPU tensors astra's ``linear`` (Joseph) projector matrix is applied as torch sparse CSR (exact
transpose; within 1% of the ``"matrix"`` back-end on smooth images). On CUDA tensors, when astra
was built with CUDA, astra's GPU forward and back projection run image by image (their pairing is
adjoint up to astra's interpolation, about 1e-6 relative).

References: W. van Aarle et al. (2016), "Fast and flexible X-ray tomography using the ASTRA
toolbox"; P. M. Joseph (1982), "An improved algorithm for reprojecting rays through pixel images".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from ._optional import import_astra
from .geometry import ParallelGeometry
from .sparse import SparseMatrixBackend


def astra_matrix(geom: ParallelGeometry) -> sp.csr_matrix:
    """astra's CPU ``linear`` (Joseph) projector matrix for ``geom`` as scipy CSR (needs astra)."""
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
    """``"astra"``: astra's matrix on CPU, astra's CUDA projectors on CUDA tensors (see the module).

    Used through ``LimitedAngleCT(in_shape, backend="astra")`` (it needs astra-toolbox, so it has
    no doctest here; ``tests/test_ct.py`` compares it with ``"matrix"`` where astra is installed).
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
