"""Pre-generator: a small normalizing flow on vectors, optionally conditioned on a measurement.

The composed-flow samplers push Gaussian noise ``eps ~ N(0, I)`` through a trainable flow ``u``
and then through the fixed prior generator ``f``: ``eps -> z = u(eps) -> x = f(z)``. Training
needs samples of ``z`` together with their exact density

    log q(z) = log N(eps; 0, I) - log |det J_u(eps)|,

which this flow provides in one forward pass (change of variables). Each step is an element-wise
affine map (:class:`~invprob.priors.layers.ActNorm` without data initialisation), an invertible
linear map in LU form (:class:`~invprob.priors.layers.LULinear`) and an affine coupling whose
log-scale and shift come from a residual MLP (:class:`~invprob.priors.layers.AffineCoupling`
with ``conditioner="mlp"``, ``scale="tanh"``). With every output layer zero at initialisation the
flow starts as the identity, so ``q`` starts equal to ``N(0, I)``.

The conditional version (amortised inference) feeds an embedding of the flattened measurement
``y`` to every coupling and to a final element-wise affine map whose scale and shift are functions
of ``y`` (:class:`~invprob.priors.layers.ConditionalAffine`). Every conditioner has a linear path
besides its MLP, so an affine flow with a ``y``-linear shift (the exact posterior of a
linear-Gaussian model) is inside the family. Parameters are initialised from a
``torch.Generator``, so a seeded model is reproducible.

References: Whang, Lei, Dimakis 2021, "Composing Normalizing Flows for Inverse Problems" (sec. 4).

Example:
    >>> import torch
    >>> flow = PreGenerator(4, n_layers=2, hidden=8, generator=torch.Generator().manual_seed(0))
    >>> z, log_q = flow.sample(5, generator=torch.Generator().manual_seed(1))
    >>> tuple(z.shape), tuple(log_q.shape)
    ((5, 4), (5,))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._checks import check_float, check_int
from ..priors.base import LOG_2PI
from ..priors.layers import ActNorm, AffineCoupling, ConditionalAffine, LULinear, ResidualMLP
from ..priors.layers.mlp import uniform_
from ..rng import randn


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
            uniform_(self.embed.linear.weight, 1.0 / math.sqrt(context_in), generator)
        layers: list[nn.Module] = []
        for i in range(self.n_layers):
            layers += [ActNorm(self.dim, data_init=False), LULinear(self.dim)]
            if self.dim > 1:
                layers.append(
                    AffineCoupling(
                        self.dim, mask="channel", flip=bool(i % 2), hidden=hidden, scale="tanh",
                        conditioner="mlp", context_dim=self.context_dim, generator=generator,
                    )
                )
        if context_in:
            layers.append(ConditionalAffine(self.dim, self.context_dim, hidden, generator))
        self.layers = nn.ModuleList(layers)

    @torch.no_grad()
    def scale_start(self, scale: float) -> None:
        """Multiply the first element-wise affine map's scale by ``scale``: a flow at the identity then
        maps ``eps`` to ``scale * eps``, i.e. starts as ``N(0, scale^2 I)``."""
        self.layers[0].log_scale.add_(math.log(check_float(scale, "scale", minimum=0, strict=True)))

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
            z, ld = layer(z, h) if layer.conditional else layer(z)
            logdet = logdet + ld
        return z, logdet

    def sample(
        self, n: int, context: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` vectors ``z = u(eps)`` and their log-density ``log q(z) = log N(eps) - log|det J_u|``.

        ``context`` is ``(n, context_in)`` (one row per sample) or ``(1, context_in)`` (shared).
        """
        n = check_int(n, "n", minimum=1)
        eps = randn((n, self.dim), like=next(self.parameters()), generator=generator)
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
