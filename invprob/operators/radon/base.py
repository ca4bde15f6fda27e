"""The back-end interface of the Radon transform and its differentiable application.

A back-end maps images ``(K, N, N)`` to sinograms ``(K, A, D)`` (:meth:`RadonBackend.project`)
and back (:meth:`RadonBackend.backproject`, the exact transpose). Neither tracks gradients:
:func:`linear_apply` makes any linear map with a known transpose differentiable to every order,
since the vector-Jacobian product of ``x -> A x`` is ``g -> A^T g``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .geometry import ParallelGeometry


class RadonBackend:
    """Interface: ``project`` maps images ``(K, N, N)`` to sinograms ``(K, A, D)``; ``backproject``
    is its exact transpose. Neither needs to track gradients (the operator wraps them).

    Example:
        >>> class ColumnSums(RadonBackend):   # the single angle 0: sum down each column
        ...     name = "column-sums"
        ...     def project(self, x):
        ...         return x.sum(-2, keepdim=True)
        ...     def backproject(self, y):
        ...         return y.expand(-1, self.geom.size, -1)
        >>> backend = ColumnSums(ParallelGeometry(3, (0.0,), 3))
        >>> backend.project(torch.ones(1, 3, 3)).tolist()
        [[[3.0, 3.0, 3.0]]]
    """

    name = "base"

    def __init__(self, geom: ParallelGeometry) -> None:
        self.geom = geom

    def project(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


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
    """Apply the linear map ``f`` (transpose ``g``) differentiably.

    Example:
        >>> m = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
        >>> x = torch.ones(2, requires_grad=True)
        >>> y = linear_apply(x, lambda v: m @ v, lambda w: m.T @ w)
        >>> y.sum().backward()
        >>> x.grad.tolist()
        [1.0, 5.0]
    """
    return _Linear.apply(x, f, g)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The floating dtype a back-end computes in: ``dtype`` itself for float32/64, else float32.

    Example:
        >>> compute_dtype(torch.float64), compute_dtype(torch.float16)
        (torch.float64, torch.float32)
    """
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32
