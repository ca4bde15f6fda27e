"""Parallel-beam Radon transform: the geometry and the back-ends behind :class:`LimitedAngleCT`.

One concept per module: :mod:`.geometry` (conventions, mappings to scikit-image and astra),
:mod:`.matrix` (assembly of the bilinear system matrix), :mod:`.cache` (in-memory and on-disk
caches), :mod:`.sparse` (sparse-matrix back-ends, ``"matrix"``), :mod:`.grid` (matrix-free
``"grid"``), :mod:`.astra` and :mod:`.torch_radon` (optional packages, imported only when used),
:mod:`.base` (the back-end interface and its differentiable application).
"""

from .astra import AstraBackend, astra_matrix
from .base import RadonBackend, linear_apply
from .cache import default_cache_dir, system_matrix
from .geometry import ParallelGeometry
from .grid import GRID_CHUNK_BYTES, GridBackend
from .matrix import DEFAULT_MEMORY_BUDGET, build_system_matrix, matrix_memory_bytes, matrix_nnz_bound
from .sparse import MatrixBackend, SparseMatrixBackend, to_torch_csr
from .torch_radon import TorchRadonBackend
from ._optional import import_astra, import_torch_radon

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "GRID_CHUNK_BYTES",
    "AstraBackend",
    "GridBackend",
    "MatrixBackend",
    "ParallelGeometry",
    "RadonBackend",
    "SparseMatrixBackend",
    "TorchRadonBackend",
    "astra_matrix",
    "build_system_matrix",
    "default_cache_dir",
    "import_astra",
    "import_torch_radon",
    "linear_apply",
    "matrix_memory_bytes",
    "matrix_nnz_bound",
    "system_matrix",
    "to_torch_csr",
]
