"""Operators from a user's functions or from a deepinv-style physics object.

:func:`from_callable` wraps a forward map ``fn``. Given its adjoint (``adjoint=fn_T``), or declared
linear (``linear=True``, the adjoint then being the vector-Jacobian product
``A^T y = d<fn(x), y>/dx``, exact for a linear ``fn``), it is a :class:`LinearOperator` with
``norm()``, the CGLS pseudo-inverse and :func:`check_adjoint`; otherwise a general
:class:`Operator` whose gradients go through autograd. :func:`from_physics` does the same for an
object with methods ``A`` (and ``A_adjoint``, ``A_dagger``), such as a deepinv physics.

References: J. Tachella et al. (2025), "DeepInverse: A Python package for solving imaging inverse
problems with deep learning" (the ``A`` / ``A_adjoint`` / ``A_dagger`` physics interface).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import as_shape, check_batch, check_finite
from .base import LinearOperator, Operator, check_input

Fn = Callable[[torch.Tensor], torch.Tensor]


class _UserFunctions:
    """What both wrappers share: the user's functions, output checks and the probe device/dtype."""

    def _setup(self, fn: Fn, adjoint: Fn | None, pinv: Fn | None, device: torch.device, dtype: torch.dtype) -> None:
        self.fn = fn
        self._adjoint_fn = adjoint
        self._pinv_fn = pinv
        self._probe = (device, dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return check_batch(self.fn(x), self.out_shape, "output of the user's forward function")

    def _user_pinv(self, y: torch.Tensor) -> torch.Tensor:
        out = self._pinv_fn(check_finite(check_input(y, self.out_shape, "y"), "y"))
        return check_batch(out, self.in_shape, "output of the user's pinv function")


class CallableOperator(_UserFunctions, Operator):
    """A general (possibly nonlinear) operator given by user functions (see :func:`from_callable`).

    Example:
        >>> op = from_callable(lambda x: x.flatten(1) ** 2, (1, 2, 2))
        >>> type(op).__name__, op(torch.full((1, 1, 2, 2), 3.0)).tolist()
        ('CallableOperator', [[9.0, 9.0, 9.0, 9.0]])
    """

    def __init__(self, fn: Fn, in_shape: tuple[int, ...], out_shape: tuple[int, ...], adjoint: Fn | None = None,
                 pinv: Fn | None = None) -> None:
        super().__init__(in_shape, out_shape)
        self._setup(fn, adjoint, pinv, torch.device("cpu"), torch.float64)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """The user's ``adjoint`` (a nonlinear operator has none unless one was given)."""
        if self._adjoint_fn is None:
            return super().adjoint(y)
        return self._adjoint_fn(check_input(y, self.out_shape, "y"))

    def pinv(self, y: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> torch.Tensor:
        """The user's pseudo-inverse (``tol`` and ``max_iter`` do not apply to it)."""
        if self._pinv_fn is None:
            return super().pinv(y)
        return self._user_pinv(y)


class CallableLinearOperator(_UserFunctions, LinearOperator):
    """A linear operator given by a user's ``fn`` and its adjoint (see :func:`from_callable`).

    Without an ``adjoint`` function the adjoint is autograd's vector-Jacobian product of ``fn``;
    without a ``pinv`` function the pseudo-inverse is CGLS (:meth:`LinearOperator.pinv`).

    Example:
        >>> op = from_callable(lambda x: 2 * x, (1, 2, 2), linear=True)   # adjoint by autograd
        >>> type(op).__name__, round(op.norm(), 6)
        ('CallableLinearOperator', 2.0)
        >>> op.adjoint(torch.ones(1, 1, 2, 2)).flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
    """

    def __init__(self, fn: Fn, in_shape: tuple[int, ...], out_shape: tuple[int, ...], adjoint: Fn | None = None,
                 pinv: Fn | None = None, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> None:
        super().__init__(in_shape, out_shape)
        self._setup(fn, adjoint, pinv, torch.device(device), dtype)

    def probe_like(self) -> tuple[torch.device, torch.dtype]:
        """The ``device`` and ``dtype`` given to :func:`from_callable` (CPU, float64 by default)."""
        return self._probe

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self._adjoint_fn is not None:
            out = self._adjoint_fn(y)
        else:
            differentiable = torch.is_grad_enabled() and y.requires_grad
            with torch.enable_grad():
                x = torch.zeros((y.shape[0], *self.in_shape), dtype=y.dtype, device=y.device, requires_grad=True)
                (out,) = torch.autograd.grad(self.fn(x), x, y, create_graph=differentiable)
        return check_batch(out, self.in_shape, "output of the user's adjoint function")

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        if self._pinv_fn is None:
            return super()._pinv(y, tol=tol, max_iter=max_iter)
        return self._user_pinv(y)


def from_callable(
    fn: Fn,
    in_shape: tuple[int, ...],
    *,
    out_shape: tuple[int, ...] | None = None,
    adjoint: Fn | None = None,
    pinv: Fn | None = None,
    linear: bool | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> CallableOperator | CallableLinearOperator:
    """Wrap a user's matrix-free forward map ``fn: (B, *in_shape) -> (B, *out_shape)``.

    ``linear`` says whether ``fn`` is linear; by default it is when ``adjoint`` is given. A linear
    operator (:class:`CallableLinearOperator`) has ``norm()``, ``pinv`` (the user's ``pinv``, else
    CGLS) and passes to :func:`check_adjoint`; ``linear=True`` without ``adjoint`` takes the adjoint
    from autograd. A nonlinear one (:class:`CallableOperator`) has only what the user gives.
    ``out_shape`` is inferred by applying ``fn`` to a zero batch when omitted. ``device`` and
    ``dtype`` (default: torch's default dtype, float32) are where and in what ``fn`` computes:
    the zero batch and the random probes of ``norm()`` and :func:`check_adjoint` are made there.

    Example:
        >>> import torch.nn.functional as F
        >>> kernel = torch.ones(1, 1, 3, 3) / 9
        >>> blur = from_callable(lambda x: F.conv2d(x, kernel.to(x), padding=1), (1, 8, 8),
        ...                      adjoint=lambda y: F.conv_transpose2d(y, kernel.to(y), padding=1))
        >>> type(blur).__name__, blur.norm() <= 1.0
        ('CallableLinearOperator', True)
        >>> from invprob.operators import check_adjoint
        >>> check_adjoint(blur).relative_error < 1e-5    # float32, the default dtype
        True
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    for name, value in (("adjoint", adjoint), ("pinv", pinv)):
        if value is not None and not callable(value):
            raise TypeError(f"{name}: expected a callable or None, got {type(value).__name__}")
    if linear is not None and not isinstance(linear, bool):
        raise TypeError(f"linear: expected True, False or None, got {type(linear).__name__} {linear!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch.dtype or None, got {dtype!r}")
    in_shape = as_shape(in_shape, "in_shape")
    if out_shape is None:
        with torch.no_grad():
            probe = fn(torch.zeros((1, *in_shape), dtype=dtype, device=device))
        if not isinstance(probe, torch.Tensor) or probe.dim() < 2:
            raise ValueError("fn: must return a batched tensor (B, *out_shape) for a (1, *in_shape) input")
        out_shape = tuple(probe.shape[1:])
    out_shape = as_shape(out_shape, "out_shape")
    if linear is None:
        linear = adjoint is not None
    if linear:
        return CallableLinearOperator(fn, in_shape, out_shape, adjoint=adjoint, pinv=pinv, device=device, dtype=dtype)
    return CallableOperator(fn, in_shape, out_shape, adjoint=adjoint, pinv=pinv)


def from_physics(physics: object, in_shape: tuple[int, ...], out_shape: tuple[int, ...] | None = None, *,
                 linear: bool | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> CallableOperator | CallableLinearOperator:
    """Wrap a deepinv-style physics object by its methods ``A``, ``A_adjoint`` and ``A_dagger``.

    deepinv itself is never imported: any object with an ``A`` method works. With an
    ``A_adjoint`` method (deepinv's ``LinearPhysics``) the result is a linear operator (unless
    ``linear=False``); ``A_dagger``, when present, serves as the pseudo-inverse. Other arguments
    as in :func:`from_callable`.

    Example:
        >>> class Double:                      # a stand-in for a deepinv LinearPhysics
        ...     def A(self, x): return 2 * x
        ...     def A_adjoint(self, y): return 2 * y
        >>> op = from_physics(Double(), (1, 3, 3))
        >>> type(op).__name__, round(op.norm(), 6)
        ('CallableLinearOperator', 2.0)
    """
    forward = getattr(physics, "A", None)
    if not callable(forward):
        raise TypeError(f"physics: expected an object with a callable method A, got {type(physics).__name__}")
    return from_callable(
        forward,
        in_shape,
        out_shape=out_shape,
        adjoint=getattr(physics, "A_adjoint", None),
        pinv=getattr(physics, "A_dagger", None),
        linear=linear,
        device=device,
        dtype=dtype,
    )
