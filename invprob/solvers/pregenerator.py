"""Pre-generator: a small normalizing flow on vectors, optionally conditioned on a measurement.

The composed-flow samplers (paper 003, sec. 4, Fig. 2) push Gaussian noise ``eps ~ N(0, I)``
through a trainable flow ``u`` and then through the fixed prior generator ``f``:
``eps -> z = u(eps) -> x = f(z)``. Training needs samples of ``z`` together with their exact density

    log q(z) = log N(eps; 0, I) - log |det J_u(eps)|,

which this flow provides in one forward pass (change of variables, paper 003 sec. 2.1). Each step
is an element-wise affine map (actnorm), an invertible linear map parametrised by its LU factors
(``W = L U``, ``L`` unit lower triangular, ``U`` upper triangular with a positive diagonal) and an
affine coupling layer whose scale and shift come from a residual MLP. With every output layer set
to zero at initialisation the flow starts as the identity, so ``q`` starts equal to ``N(0, I)``.

The conditional version (used by amortised VI, paper 003 eq. 2 and sec. 6.4) feeds an embedding of
the flattened measurement ``y`` to every coupling and to a final element-wise affine map whose
scale and shift are functions of ``y``. Every conditioner has a linear path besides its MLP, so an
affine flow with a ``y``-linear shift (the exact posterior of a linear-Gaussian model) is inside
the family.

Parameters are initialised from a ``torch.Generator`` so that a seeded run is reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._checks import check_int
from ..priors.base import LOG_2PI


def _uniform_(tensor: torch.Tensor, bound: float, generator: torch.Generator | None) -> None:
    """Fill ``tensor`` in place with U(-bound, bound), drawn on the CPU from ``generator``."""
    values = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
    with torch.no_grad():
        tensor.copy_((2 * values - 1) * bound)


class ResidualMLP(nn.Module):
    """``g(v) = L v + M(v)``: a linear map plus a two-hidden-layer MLP, both zero at initialisation.

    The hidden layers are initialised with the usual ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``; the
    two output layers start at zero so that ``g = 0`` until training moves them.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, generator: torch.Generator | None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.hidden = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.out = nn.Linear(hidden, out_dim)
        for layer in (self.hidden[0], self.hidden[2]):
            bound = 1.0 / math.sqrt(layer.in_features)
            _uniform_(layer.weight, bound, generator)
            _uniform_(layer.bias, bound, generator)
        for layer in (self.linear, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.linear(v) + self.out(self.hidden(v))


def _soft_clamp(s: torch.Tensor, bound: float = 3.0) -> torch.Tensor:
    """``bound * tanh(s / bound)``: log-scales stay in (-bound, bound) for a stable exp."""
    return bound * torch.tanh(s / bound)


class ActNorm(nn.Module):
    """Element-wise affine map ``z = v * exp(s) + t``; ``log|det J| = sum(s)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, v: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return v * self.log_scale.exp() + self.shift, self.log_scale.sum().expand(v.shape[0])


class LULinear(nn.Module):
    """Invertible linear map ``z = L U v + c``; ``log|det J| = sum(log diag U)``.

    ``L`` is unit lower triangular and ``U`` upper triangular with diagonal ``exp(u)``, so every
    matrix with positive leading principal minors (in particular every lower-triangular Cholesky
    factor) is reachable. Starts at the identity.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("_eye", torch.eye(dim), persistent=False)

    def weight(self) -> torch.Tensor:
        lower = torch.tril(self.lower, -1) + self._eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.log_diag.exp())
        return lower @ upper

    def forward(self, v: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return v @ self.weight().T + self.bias, self.log_diag.sum().expand(v.shape[0])


class AffineCoupling(nn.Module):
    """Affine coupling: ``z_b = v_b * exp(s) + t`` with ``(s, t) = g([v_a, h])``, ``z_a = v_a``.

    ``a`` and ``b`` are the two halves of the coordinates (which half is kept alternates with
    ``parity``); ``h`` is the optional context. ``log|det J| = sum(s)`` (triangular Jacobian).
    """

    def __init__(self, dim: int, hidden: int, context_dim: int, parity: int, generator: torch.Generator | None) -> None:
        super().__init__()
        half = dim // 2
        kept, changed = (half, dim - half) if parity == 0 else (dim - half, half)
        self.kept, self.changed, self.parity = kept, changed, parity
        self.net = ResidualMLP(kept + context_dim, 2 * changed, hidden, generator)

    def _split(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.parity == 0:
            return v[:, : self.kept], v[:, self.kept :]
        return v[:, self.changed :], v[:, : self.changed]

    def forward(self, v: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        v_a, v_b = self._split(v)
        inputs = v_a if context is None else torch.cat([v_a, context], dim=1)
        raw_s, t = self.net(inputs).chunk(2, dim=1)
        s = _soft_clamp(raw_s)
        z_b = v_b * s.exp() + t
        z = torch.cat([v_a, z_b], 1) if self.parity == 0 else torch.cat([z_b, v_a], 1)
        return z, s.sum(1)


class ConditionalAffine(nn.Module):
    """Element-wise affine map whose scale and shift depend on the context: ``z = v * exp(s(h)) + t(h)``."""

    def __init__(self, dim: int, context_dim: int, hidden: int, generator: torch.Generator | None) -> None:
        super().__init__()
        self.net = ResidualMLP(context_dim, 2 * dim, hidden, generator)

    def forward(self, v: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if context is None:
            raise ValueError("ConditionalAffine: a context is required")
        raw_s, t = self.net(context).chunk(2, dim=1)
        s = _soft_clamp(raw_s)
        return v * s.exp() + t, s.sum(1)


class PreGenerator(nn.Module):
    """A flow ``u: R^dim -> R^dim`` (optionally conditioned on a vector ``c`` of size ``context_in``).

    ``forward(eps, c)`` returns ``(u(eps; c), log|det J_u(eps; c)|)``; :meth:`sample` draws ``eps``
    and returns ``(z, log q(z))``. ``config()`` gives the constructor arguments (to rebuild it when
    loading saved weights).
    """

    def __init__(
        self,
        dim: int,
        *,
        n_layers: int = 4,
        hidden: int = 64,
        context_in: int = 0,
        context_dim: int = 32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", minimum=1)
        self.n_layers = check_int(n_layers, "n_layers", minimum=1)
        self.hidden_size = check_int(hidden, "hidden", minimum=1)
        self.context_in = check_int(context_in, "context_in", minimum=0)
        self.context_dim = check_int(context_dim, "context_dim", minimum=1) if context_in else 0
        self.embed = ResidualMLP(context_in, self.context_dim, hidden, generator) if context_in else None
        if self.embed is not None:
            # a non-zero linear path, else the context and everything reading it start with zero gradient
            _uniform_(self.embed.linear.weight, 1.0 / math.sqrt(context_in), generator)
        layers: list[nn.Module] = []
        for i in range(self.n_layers):
            layers += [ActNorm(self.dim), LULinear(self.dim)]
            if self.dim > 1:
                layers.append(AffineCoupling(self.dim, hidden, self.context_dim, i % 2, generator))
        if context_in:
            layers.append(ConditionalAffine(self.dim, self.context_dim, hidden, generator))
        self.layers = nn.ModuleList(layers)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-serialisable)."""
        return {
            "dim": self.dim,
            "n_layers": self.n_layers,
            "hidden": self.hidden_size,
            "context_in": self.context_in,
            "context_dim": self.context_dim or 32,
        }

    def forward(self, eps: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ``eps`` (``(N, dim)``) to ``z = u(eps; c)``; also return ``log|det J_u|`` of shape ``(N,)``."""
        h = self._embed(context, eps.shape[0])
        logdet = eps.new_zeros(eps.shape[0])
        z = eps
        for layer in self.layers:
            z, ld = layer(z, h)
            logdet = logdet + ld
        return z, logdet

    def sample(
        self, n: int, context: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` vectors ``z = u(eps)`` and their log-density ``log q(z) = log N(eps) - log|det J_u|``.

        ``context`` is ``(n, context_in)`` (one row per sample) or ``(1, context_in)`` (shared).
        """
        n = check_int(n, "n", minimum=1)
        param = next(self.parameters())
        eps = torch.randn((n, self.dim), generator=generator, dtype=param.dtype).to(param.device)
        z, logdet = self(eps, None if context is None else context.expand(n, -1))
        log_base = -0.5 * (eps.pow(2).sum(1) + self.dim * LOG_2PI)
        return z, log_base - logdet

    def _embed(self, context: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if self.embed is None:
            if context is not None:
                raise ValueError("PreGenerator: this flow is unconditional; context must be None")
            return None
        if context is None or tuple(context.shape) != (n, self.context_in):
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"context: expected shape ({n}, {self.context_in}), got {got}")
        return self.embed(context)
