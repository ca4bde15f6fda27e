"""A residual MLP: the conditioner of the vector flow layers (pre-generator, conditional maps)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...rng import rand


def uniform_(tensor: torch.Tensor, bound: float, generator: torch.Generator | None) -> None:
    """Fill ``tensor`` in place with ``U(-bound, bound)`` drawn (on the CPU) from ``generator``."""
    values = rand(tuple(tensor.shape), like=tensor, generator=generator)
    with torch.no_grad():
        tensor.copy_((2 * values - 1) * bound)


class ResidualMLP(nn.Module):
    """``g(v) = L v + M(v)``: a linear map plus a two-hidden-layer GELU MLP, both zero at initialisation.

    The hidden layers are initialised with the usual ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` drawn
    from ``generator`` (a seeded model is reproducible); the linear path and the output layer start
    at zero, so ``g = 0`` until training moves them. The linear path keeps every affine function of
    ``v`` inside the family.

    Example:
        >>> import torch
        >>> net = ResidualMLP(3, 2, hidden=8, generator=torch.Generator().manual_seed(0))
        >>> net(torch.ones(5, 3)).abs().max().item()
        0.0
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.hidden = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.out = nn.Linear(hidden, out_dim)
        for layer in (self.hidden[0], self.hidden[2]):
            bound = 1.0 / math.sqrt(layer.in_features)
            uniform_(layer.weight, bound, generator)
            uniform_(layer.bias, bound, generator)
        for layer in (self.linear, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.linear(v) + self.out(self.hidden(v))
