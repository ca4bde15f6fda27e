"""Assembly of the bilinear system matrix ``A`` of the Radon transform and its size bounds.

Each ray sample at pixel-index coordinates ``(u, v)`` (see :mod:`.geometry`) adds the bilinear
weights ``(1 - fu)(1 - fv), fu (1 - fv), (1 - fu) fv, fu fv`` of its four neighbouring pixels to the
row of its detector bin; samples outside the image contribute nothing.

References: P. M. Joseph (1982), "An improved algorithm for reprojecting rays through pixel images".
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .geometry import ParallelGeometry

DEFAULT_MEMORY_BUDGET = 2**30
"""Bytes the ``"matrix"`` back-end may use by default (upper bound, see :func:`matrix_memory_bytes`)."""


def matrix_nnz_bound(geom: ParallelGeometry) -> int:
    """Upper bound on the non-zeros of ``A``: four per ray sample inside the image's chord.

    Example:
        >>> matrix_nnz_bound(ParallelGeometry(8, (0.0, 90.0), 8))
        896
    """
    chord = math.ceil(geom.size * math.sqrt(2.0)) + 2
    return 4 * geom.n_angles * geom.n_detectors * min(chord, 2 * geom.half_length + 1)


def matrix_memory_bytes(geom: ParallelGeometry) -> int:
    """Upper bound on the bytes of ``A`` and ``A^T`` stored as float64 CSR with int64 indices.

    Example:
        >>> matrix_memory_bytes(ParallelGeometry(8, (0.0, 90.0), 8))
        29328
    """
    rows = geom.n_angles * geom.n_detectors
    cols = geom.size * geom.size
    return 16 * 2 * matrix_nnz_bound(geom) + 8 * (rows + cols + 2)


def build_system_matrix(geom: ParallelGeometry, max_entries: int = 2**22) -> sp.csr_matrix:
    """Assemble ``A`` (rows ``angle * D + bin``, columns ``row * N + col``) as float64 CSR.

    Vectorised over all samples of a block of angles; blocks keep the temporary arrays near
    ``max_entries`` elements. Duplicates (pixels shared by consecutive samples) are summed.

    Example:
        >>> a = build_system_matrix(ParallelGeometry(4, (0.0,), 4))
        >>> a.shape, a.toarray().sum(axis=1).tolist()  # at 0 degrees a row sums one column
        ((4, 16), [4.0, 4.0, 4.0, 4.0])
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
