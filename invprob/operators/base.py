"""The forward-operator interface every solver talks to.

An operator maps a batch of images ``x`` of shape ``(B, *in_shape)`` to measurements of shape
``(B, *out_shape)``. :class:`Operator` is the general (possibly nonlinear) case; it only needs a
forward map, and gradients flow through autograd. :class:`LinearOperator` adds what solvers use for
linear problems: the exact adjoint, the pseudo-inverse, the normal operator and the spectral norm.

Inputs (:func:`check_input`): a real floating-point tensor with a non-empty batch; complex
tensors and ``B = 0`` are refused with a one-line error. Non-finite values: ``forward``,
``adjoint`` and ``normal`` are plain linear algebra and propagate NaN/Inf as IEEE arithmetic does
(no check: they run in every solver iteration, and the solvers check their iterates and losses,
naming the iteration); ``pinv`` is a solve from measurements and refuses non-finite ``y``, as
:func:`invprob.solve` does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import as_shape, check_batch, check_finite, check_int


def check_input(x: object, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Check an operator input: a real floating tensor of shape ``(B, *shape)`` with ``B >= 1``.

    Example:
        >>> check_input(torch.zeros(2, 3), (3,), "x").shape
        torch.Size([2, 3])
        >>> check_input(torch.zeros(0, 3), (3,), "x")
        Traceback (most recent call last):
        ...
        ValueError: x: expected a non-empty batch (B >= 1) of shape (B, 3), got shape (0, 3)
    """
    x = check_batch(x, shape, name)
    if x.is_complex():
        raise TypeError(
            f"{name}: expected a real floating-point tensor, got dtype {x.dtype}; "
            "pass the real and imaginary parts as separate inputs"
        )
    if x.shape[0] == 0:
        dims = ", ".join(str(s) for s in shape)
        raise ValueError(f"{name}: expected a non-empty batch (B >= 1) of shape (B, {dims}), got shape {tuple(x.shape)}")
    return x


class Operator(nn.Module):
    """A forward map ``A: R^in_shape -> R^out_shape``, ``x -> A(x)``, applied to batches.

    Subclasses implement :meth:`_forward`; :meth:`forward` checks the input first
    (:func:`check_input`). Gradients flow through autograd, so a nonlinear ``A`` serves every
    solver that only needs ``grad_x ||A(x) - y||^2``. The default :meth:`adjoint` and :meth:`pinv`
    raise ``NotImplementedError`` with a message saying how to supply them.

    Example:
        >>> class Square(Operator):
        ...     def __init__(self):
        ...         super().__init__((3,), (3,))
        ...     def _forward(self, x):
        ...         return x**2
        >>> Square()(torch.tensor([[1.0, 2.0, 3.0]])).tolist()
        [[1.0, 4.0, 9.0]]
    """

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.in_shape = as_shape(in_shape, "in_shape")
        self.out_shape = as_shape(out_shape, "out_shape")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator to a batch ``x`` of shape ``(B, *in_shape)`` (see :func:`check_input`)."""
        return self._forward(check_input(x, self.in_shape, "x"))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no adjoint; build it with "
            "from_callable(fn, in_shape, adjoint=...) or use a LinearOperator"
        )

    def pinv(self, y: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> torch.Tensor:
        """Pseudo-inverse ``A^+ y``; the general operator has none (``tol``/``max_iter`` as in LinearOperator)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no pseudo-inverse; build it with "
            "from_callable(fn, in_shape, pinv=...) or pass x_init to the solver"
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}"

    def cast_buffer(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Buffer ``name`` in the dtype and on the device of ``like``, cast once and then reused.

        The cast copy is kept per ``(dtype, device)`` and rebuilt when the buffer changes (in-place
        edits, ``load_state_dict``, ``.to()``), so a float32 solver does not recast a float64
        matrix on every call.
        """
        source = self.get_buffer(name)
        if source.dtype == like.dtype and source.device == like.device:
            return source
        cache = self.__dict__.setdefault("_cast_cache", {})
        key = (name, like.dtype, like.device)
        stamp = (source.data_ptr(), source._version)
        hit = cache.get(key)
        if hit is None or hit[0] != stamp:
            hit = (stamp, source.to(device=like.device, dtype=like.dtype))
            cache[key] = hit
        return hit[1]

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .double(): the cast copies are stale
        self.__dict__.pop("_cast_cache", None)
        return super()._apply(fn, *args, **kwargs)


class LinearOperator(Operator):
    """A linear operator ``A`` with its exact adjoint ``A^T``: ``<A x, y> = <x, A^T y>``.

    Subclasses implement ``_forward`` (A x) and ``_adjoint`` (A^T y) on correctly shaped batches,
    and may override ``_pinv`` with a closed form of the Moore–Penrose pseudo-inverse
    ``A^+ = lim_{e -> 0} (A^T A + e I)^{-1} A^T`` (else CGLS, :func:`cgls`). ``norm()`` is the
    spectral norm ``sqrt(lambda_max(A^T A))`` by power iteration. Outputs follow the input's device
    and dtype. Composition ``A @ B`` is ``x -> A(B(x))`` and ``c * A`` scales the operator.

    References: M. R. Hestenes and E. Stiefel (1952), "Methods of conjugate gradients for solving
    linear systems"; R. von Mises and H. Pollaczek-Geiringer (1929), "Praktische Verfahren der
    Gleichungsauflösung" (power iteration).

    Example:
        >>> class Double(LinearOperator):
        ...     def __init__(self):
        ...         super().__init__((2,), (2,))
        ...     def _forward(self, x):
        ...         return 2 * x
        ...     _adjoint = _forward
        >>> op = Double()
        >>> round(op.norm(), 6), op.pinv(torch.tensor([[2.0, 4.0]])).tolist()
        (2.0, [[1.0, 2.0]])
    """

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint ``A^T`` to a batch ``y`` of shape ``(B, *out_shape)``."""
        return self._adjoint(check_input(y, self.out_shape, "y"))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the normal operator ``A^T A``."""
        return self.adjoint(self.forward(x))

    def pinv(self, y: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> torch.Tensor:
        """Apply the Moore–Penrose pseudo-inverse ``A^+ y``.

        Uses the operator's closed form when it has one; otherwise solves the least-squares problem
        ``min ||A x - y||`` with :func:`cgls` started at 0, whose iterates stay in the range of
        ``A^T`` so that it converges to the minimum-norm solution ``A^+ y``. Stops when
        ``||A^T (y - A x)|| <= tol * ||A^T y||`` per sample or after ``max_iter`` iterations.
        """
        y = check_finite(check_input(y, self.out_shape, "y"), "y")
        return self._pinv(y, tol=tol, max_iter=max_iter)

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        return cgls(self, y, tol=tol, max_iter=max_iter)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probe_like(self) -> tuple[torch.device, torch.dtype]:
        """Device and dtype of the random probes of :meth:`norm` and :func:`check_adjoint`.

        The device of the operator's buffers (CPU without any) and float64; operators wrapping a
        user's function say what that function computes in.
        """
        return _device_of(self), torch.float64

    @torch.no_grad()
    def norm(self, n_iter: int = 100, *, tol: float = 1e-7, generator: torch.Generator | None = None) -> float:
        """Spectral norm ``||A||_2`` by power iteration on ``A^T A`` (seeded; see :meth:`probe_like`)."""
        check_int(n_iter, "n_iter", minimum=1)
        device, dtype = self.probe_like()
        gen = generator if generator is not None else torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn((1, *self.in_shape), generator=gen, dtype=dtype).to(device)
        x /= x.norm()
        estimate = 0.0
        for _ in range(n_iter):
            z = self.normal(x)
            new = float(z.norm())
            if new == 0.0:
                return 0.0
            x = z / new
            if abs(new - estimate) <= tol * new:
                estimate = new
                break
            estimate = new
        return math.sqrt(estimate)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Composition(self, other)

    def __mul__(self, scale: float) -> LinearOperator:
        if not isinstance(scale, (int, float)) or isinstance(scale, bool):
            return NotImplemented
        return Scaled(self, float(scale))

    __rmul__ = __mul__


def _device_of(module: nn.Module) -> torch.device:
    for t in list(module.buffers()) + list(module.parameters()):
        return t.device
    return torch.device("cpu")


def _batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def cgls(op: LinearOperator, y: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 200) -> torch.Tensor:
    """Least squares ``argmin_x ||A x - y||^2`` by conjugate gradients on the normal equations.

    CGLS (Hestenes–Stiefel form) applied to ``A^T A x = A^T y`` from ``x = 0``, per batch element;
    its iterates stay in the range of ``A^T``, so it converges to the minimum-norm solution
    ``A^+ y``. Stopping rule: ``||A^T r|| <= tol * ||A^T y||`` for every sample (converged samples
    are frozen, so a batch gives the same result as its samples one by one), or ``max_iter``
    iterations.

    References: M. R. Hestenes and E. Stiefel (1952), "Methods of conjugate gradients for solving
    linear systems"; Å. Björck (1996), "Numerical Methods for Least Squares Problems".

    Example:
        >>> from invprob.operators import SuperResolution
        >>> op = SuperResolution((1, 4, 4), 2)
        >>> x = cgls(op, torch.ones(1, 1, 2, 2))
        >>> x.shape, round(float(x.mean()), 6)  # A^+ of a block average replicates the value
        (torch.Size([1, 1, 4, 4]), 1.0)
    """
    check_int(max_iter, "max_iter", minimum=1)
    if not tol > 0:
        raise ValueError(f"tol: expected a positive float, got {tol}")
    shape = (-1,) + (1,) * len(op.in_shape)
    r = y.clone()
    s = op.adjoint(r)
    x = torch.zeros_like(s)
    p = s.clone()
    gamma = _batch_dot(s, s)
    threshold = (tol**2) * gamma
    for _ in range(max_iter):
        active = gamma > threshold  # converged samples are frozen, so a batch equals its singles
        if not bool(active.any()):
            break
        q = op.forward(p)
        qq = _batch_dot(q, q)
        tiny = torch.finfo(qq.dtype).tiny
        alpha = torch.where(active & (qq > 0), gamma / qq.clamp_min(tiny), torch.zeros_like(qq))
        x = x + alpha.view(shape) * p
        r = r - alpha.view((-1,) + (1,) * len(op.out_shape)) * q
        s = op.adjoint(r)
        gamma_new = _batch_dot(s, s)
        beta = torch.where(active & (gamma > 0), gamma_new / gamma.clamp_min(tiny), torch.zeros_like(gamma))
        p = torch.where(active.view(shape), s + beta.view(shape) * p, p)
        gamma = torch.where(active, gamma_new, gamma)
    return x


class Composition(LinearOperator):
    """``(A @ B) x = A(B x)``; adjoint ``(A B)^T = B^T A^T``; pseudo-inverse by CGLS.

    Example:
        >>> from invprob.operators import Identity, SuperResolution
        >>> op = SuperResolution((1, 4, 4), 2) @ Identity((1, 4, 4))
        >>> type(op).__name__, op.out_shape
        ('Composition', (1, 2, 2))
    """

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        if outer.in_shape != inner.out_shape:
            raise ValueError(
                f"cannot compose: outer operator expects in_shape {outer.in_shape}, "
                f"inner operator gives out_shape {inner.out_shape}"
            )
        super().__init__(inner.in_shape, outer.out_shape)
        self.outer = outer
        self.inner = inner

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(x))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))


class Scaled(LinearOperator):
    """``(c A) x = c (A x)``; adjoint ``c A^T``; pseudo-inverse ``(c A)^+ = A^+ / c``.

    Example:
        >>> from invprob.operators import Identity
        >>> op = 2.0 * Identity((3,))
        >>> op(torch.ones(1, 3)).tolist(), op.pinv(torch.ones(1, 3)).tolist()
        ([[2.0, 2.0, 2.0]], [[0.5, 0.5, 0.5]])
    """

    def __init__(self, op: LinearOperator, scale: float) -> None:
        if scale == 0 or not math.isfinite(scale):
            raise ValueError(f"scale: expected a finite non-zero number, got {scale}")
        super().__init__(op.in_shape, op.out_shape)
        self.op = op
        self.scale = scale

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.op(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.scale * self.op.adjoint(y)

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        return self.op.pinv(y, tol=tol, max_iter=max_iter) / self.scale
