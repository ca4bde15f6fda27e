"""Invertible 1x1 convolution (Glow)."""

from __future__ import annotations

import torch
from torch import nn

from .base import FlowLayer, spatial_size


def random_orthogonal(rows: int, cols: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A ``rows x cols`` matrix with orthonormal columns (``rows >= cols``), Haar-distributed."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(torch.get_default_dtype())


class InvertibleConv1x1(FlowLayer):
    """Channel mixing ``y[:, :, i, j] = W x[:, :, i, j]`` with a square invertible ``W``.

    ``logdet = H W log |det W|``; ``W`` starts as a random rotation (``logdet = 0``).

    Example:
        >>> import torch
        >>> layer = InvertibleConv1x1(3)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-5), logdet.shape
        (True, torch.Size([2]))
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(random_orthogonal(channels, channels))

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        log_det = self.from_weight("logdet", self.weight, lambda: torch.linalg.slogdet(self.weight)[1])
        return (spatial_size(x) * log_det).expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.einsum("oc,bchw->bohw", self.weight, x), self._logdet(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.einsum("oc,bchw->bohw", self.from_weight("inv", self.weight, lambda: torch.linalg.inv(self.weight)), y)
        return x, self._logdet(y)
