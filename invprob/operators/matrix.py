"""Dense-matrix operators: a user's matrix and the random Gaussian compressed-sensing matrix.

``A x = M vec(x)`` with ``M`` of shape ``(m, n)``, ``n = prod(in_shape)``; ``A^T y = M^T y``. The
matrix is stored in float64; inputs of another dtype or device use a cast copy made once
(:meth:`Operator.cast_buffer`). The pseudo-inverse ``M^+`` is computed by SVD on the first call of
``pinv`` (never at construction) when it fits in memory, and by CGLS otherwise.

References: E. J. Candès, J. Romberg, T. Tao (2006), "Robust uncertainty principles: exact signal
reconstruction from highly incomplete frequency information" (random Gaussian measurements);
K. Kothari, A. Khorashadizadeh, M. de Hoop, I. Dokmanić (2021), "Trumpets: Injective Flows for
Inference and Inverse Problems" (RandGauss, m = 250).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from .._checks import as_shape, check_finite, check_int, to_tensor
from .base import LinearOperator

_FLOAT64 = 8


def available_memory() -> int:
    """Bytes of memory available to allocate now (``MemAvailable`` on Linux, else free pages).

    Example:
        >>> available_memory() > 0
        True
    """
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown: do not refuse


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


class MatrixOperator(LinearOperator):
    """``A x = M vec(x)`` for a dense ``(m, n)`` matrix ``M`` (finite, real), ``n = prod(in_shape)``.

    ``out_shape`` defaults to ``(m,)``. ``pinv`` is the closed form ``M^+ y`` (SVD, computed on first
    use and kept) or CGLS when ``M^+`` would not fit in memory.

    Example:
        >>> op = MatrixOperator(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]), (1, 2, 2))
        >>> op(torch.ones(1, 1, 2, 2)).tolist()
        [[1.0, 2.0]]
        >>> op.pinv(torch.tensor([[1.0, 2.0]])).flatten().tolist()
        [1.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, matrix: torch.Tensor | np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...] | None = None) -> None:
        if (isinstance(matrix, torch.Tensor) and matrix.is_complex()) or (
            isinstance(matrix, np.ndarray) and np.iscomplexobj(matrix)
        ):
            raise TypeError(f"matrix: expected a real matrix, got dtype {matrix.dtype}; stack real and imaginary parts as rows")
        matrix = to_tensor(matrix, "matrix", dtype=torch.float64)
        in_shape = as_shape(in_shape, "in_shape")
        if matrix.dim() != 2 or matrix.shape[1] != math.prod(in_shape):
            raise ValueError(
                f"matrix: expected shape (m, {math.prod(in_shape)}) for in_shape {in_shape}, got {tuple(matrix.shape)}"
            )
        check_finite(matrix, "matrix")
        out_shape = (matrix.shape[0],) if out_shape is None else as_shape(out_shape, "out_shape")
        if math.prod(out_shape) != matrix.shape[0]:
            raise ValueError(f"out_shape: {out_shape} does not hold the matrix's {matrix.shape[0]} rows")
        super().__init__(in_shape, out_shape)
        self.register_buffer("matrix", matrix.contiguous())
        self.register_buffer("matrix_pinv", None, persistent=False)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.flatten(1) @ self.cast_buffer("matrix", x).T
        return out.reshape(x.shape[0], *self.out_shape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = y.flatten(1) @ self.cast_buffer("matrix", y)
        return out.reshape(y.shape[0], *self.in_shape)

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        if self.matrix_pinv is None:
            m, n = self.matrix.shape
            # M^+ (n x m) plus the SVD's factors and workspace: about three matrices of M's size
            if 3 * _FLOAT64 * m * n > available_memory():
                return super()._pinv(y, tol=tol, max_iter=max_iter)
            self.matrix_pinv = torch.linalg.pinv(self.matrix).contiguous()
        out = y.flatten(1) @ self.cast_buffer("matrix_pinv", y).T
        return out.reshape(y.shape[0], *self.in_shape)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self.matrix_pinv = None  # computed again from the loaded matrix
        super()._load_from_state_dict(*args, **kwargs)


def from_matrix(matrix: torch.Tensor | np.ndarray, in_shape: tuple[int, ...]) -> MatrixOperator:
    """Build a :class:`MatrixOperator` from a dense, finite ``(m, prod(in_shape))`` matrix.

    Example:
        >>> op = from_matrix(np.eye(4)[:2], (1, 2, 2))
        >>> op.out_shape, op.norm()
        ((2,), 1.0)
    """
    return MatrixOperator(matrix, in_shape)


class RandomGaussian(MatrixOperator):
    """Compressed sensing: ``m`` measurements with an i.i.d. ``N(0, 1/m)`` matrix.

    The matrix is drawn from a CPU ``torch.Generator`` seeded with ``seed``, so the same seed gives
    the same operator on every machine. The TRUMPETs paper uses ``m = 250`` ("RandGauss"). An
    ``m`` whose ``m x n`` float64 matrix does not fit in the available memory is refused with a
    ``MemoryError`` naming ``m`` before anything is allocated.

    References: E. J. Candès, J. Romberg, T. Tao (2006), "Robust uncertainty principles: exact
    signal reconstruction from highly incomplete frequency information".

    Example:
        >>> op = RandomGaussian((1, 8, 8), m=20, seed=0)
        >>> op.out_shape, op(torch.zeros(3, 1, 8, 8)).shape
        ((20,), torch.Size([3, 20]))
    """

    def __init__(self, in_shape: tuple[int, ...], m: int, seed: int = 0) -> None:
        in_shape = as_shape(in_shape, "in_shape")
        m = check_int(m, "m", minimum=1)
        seed = check_int(seed, "seed", minimum=0)
        n = math.prod(in_shape)
        need, free = _FLOAT64 * m * n, available_memory()
        if need > free:
            raise MemoryError(
                f"m: {m} measurements of a {n}-pixel image need a {m} x {n} float64 matrix ({_gib(need)}), "
                f"more than the {_gib(free)} of memory available; use a smaller m"
            )
        gen = torch.Generator().manual_seed(seed)
        matrix = torch.randn((m, n), generator=gen, dtype=torch.float64).div_(math.sqrt(m))
        super().__init__(matrix, in_shape)
        self.m = m
        self.seed = seed

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, m={self.m}, seed={self.seed}"
