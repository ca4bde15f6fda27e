"""Vector flow layers: an invertible linear map in LU form and a context-dependent affine map."""

from __future__ import annotations

import torch
from torch import nn

from .base import FlowLayer
from .mlp import ResidualMLP


def soft_clamp(s: torch.Tensor, bound: float = 3.0) -> torch.Tensor:
    """``bound * tanh(s / bound)``: a log-scale kept in ``(-bound, bound)`` for a stable ``exp``."""
    return bound * torch.tanh(s / bound)


class LULinear(FlowLayer):
    """Invertible linear map of vectors ``y = L U x + c``; ``logdet = sum(log diag U)``.

    ``L`` is unit lower triangular and ``U`` upper triangular with diagonal ``exp(u)``, so every
    matrix with positive leading principal minors (in particular every lower-triangular Cholesky
    factor) is reachable; the inverse is two triangular solves. Starts at the identity.
    Inputs are ``(N, dim)``.

    Example:
        >>> import torch
        >>> layer = LULinear(3)
        >>> _ = torch.nn.init.constant_(layer.upper, 0.5)
        >>> x = torch.randn(4, 3)
        >>> y, logdet = layer(x)
        >>> bool(torch.allclose(layer.inverse(y)[0], x, atol=1e-6)), logdet.tolist()
        (True, [0.0, 0.0, 0.0, 0.0])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("_eye", torch.eye(dim), persistent=False)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, U)``."""
        lower = torch.tril(self.lower, -1) + self._eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.log_diag.exp())
        return lower, upper

    def weight(self) -> torch.Tensor:
        """``W = L U``."""
        lower, upper = self.factors()
        return lower @ upper

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_diag.sum().expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.weight().T + self.bias, self._logdet(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self.factors()
        rhs = (y - self.bias).T
        w = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, w, upper=True).T, self._logdet(y)


class ConditionalAffine(FlowLayer):
    """Element-wise affine map of vectors whose scale and shift depend on a context ``h``.

    ``y = x * exp(s(h)) + t(h)`` with ``(s, t)`` from a :class:`ResidualMLP` of ``h`` (``s``
    soft-clamped to ``(-3, 3)``); ``logdet = sum(s)``. Starts as the identity. With a ``y``-linear
    shift it expresses the exact posterior mean map of a linear-Gaussian model.

    Example:
        >>> import torch
        >>> layer = ConditionalAffine(2, context_dim=3, hidden=8)
        >>> y, logdet = layer(torch.ones(4, 2), torch.zeros(4, 3))
        >>> y.tolist()[0], logdet.tolist()[0]
        ([1.0, 1.0], 0.0)
    """

    conditional = True

    def __init__(self, dim: int, context_dim: int, hidden: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.net = ResidualMLP(context_dim, 2 * dim, hidden, generator)

    def _scale_shift(self, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if context is None:
            raise ValueError("ConditionalAffine: a context is required")
        raw_s, t = self.net(context).chunk(2, dim=1)
        return soft_clamp(raw_s), t

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._scale_shift(context)
        return x * s.exp() + t, s.sum(1)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._scale_shift(context)
        return (y - t) * torch.exp(-s), s.sum(1)
