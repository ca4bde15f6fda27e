"""Caches of the system matrix: a small in-memory cache and an optional on-disk cache.

A matrix is looked up in memory (the last :data:`MEMORY_CACHE_SIZE` geometries), then on disk
(``ct-<key>.npz`` in ``cache_dir``, named by :meth:`ParallelGeometry.key`), and built otherwise.
Files are written to a temporary name in the same folder and renamed into place, so concurrent
processes never read a partial file.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import scipy.sparse as sp

from .geometry import ParallelGeometry
from .matrix import build_system_matrix

MEMORY_CACHE_SIZE = 8
"""How many geometries' ``(A, A^T)`` the in-memory cache keeps."""

_MEMORY_CACHE: OrderedDict[ParallelGeometry, tuple[sp.csr_matrix, sp.csr_matrix]] = OrderedDict()


def default_cache_dir() -> Path:
    """``$INVPROB_CACHE_DIR`` or ``$XDG_CACHE_HOME/invprob`` (``~/.cache/invprob``) + ``/ct``.

    Example:
        >>> default_cache_dir().name
        'ct'
    """
    root = os.environ.get("INVPROB_CACHE_DIR")
    if root is None:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "invprob")
    return Path(root) / "ct"


def system_matrix(geom: ParallelGeometry, cache_dir: Path | None = None) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``(A, A^T)`` for ``geom``: from the in-memory cache, else ``cache_dir``, else built.

    Example:
        >>> geom = ParallelGeometry(6, (0.0, 45.0), 6)
        >>> a, at = system_matrix(geom)
        >>> a.shape, at.shape, system_matrix(geom)[0] is a
        ((12, 36), (36, 12), True)
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
    while len(_MEMORY_CACHE) > MEMORY_CACHE_SIZE:
        _MEMORY_CACHE.popitem(last=False)
    return pair


def forget(geom: ParallelGeometry) -> None:
    """Drop ``geom`` from the in-memory cache (the next :func:`system_matrix` reads or builds it).

    Example:
        >>> geom = ParallelGeometry(6, (10.0,), 6)
        >>> a, _ = system_matrix(geom)
        >>> forget(geom)
        >>> system_matrix(geom)[0] is a
        False
    """
    _MEMORY_CACHE.pop(geom, None)


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
