"""Activation normalisation with data-dependent initialisation (Glow)."""

from __future__ import annotations

import torch
from torch import nn

from .base import FlowLayer, spatial_size


class ActNorm(FlowLayer):
    """Per-channel affine map ``y = x * exp(log_scale) + bias``.

    ``logdet = H W sum_c log_scale_c``. The first batch that passes through an uninitialised layer
    (in either direction) sets the parameters so that the data side ``y`` of that batch has zero
    mean and unit variance per channel: in the normalising direction (``inverse``) the output is
    standardised, in the generative direction the layer starts by standardising its input's
    image. The ``initialized`` flag is a buffer, so loaded checkpoints never re-initialise.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self.eps = eps

    @torch.no_grad()
    def _initialize(self, data_side: torch.Tensor, inverse: bool) -> None:
        mean = data_side.mean(dim=(0, 2, 3), keepdim=True)
        std = data_side.std(dim=(0, 2, 3), keepdim=True, unbiased=False) if data_side.numel() > data_side.shape[1] else torch.ones_like(mean)
        std = std.clamp_min(self.eps)
        if inverse:  # data side is y: choose y = x * std + mean so that x = (y - mean) / std is standardised
            self.log_scale.copy_(std.log())
            self.bias.copy_(mean)
        else:  # data side is the input x: y = (x - mean) / std
            self.log_scale.copy_(-std.log())
            self.bias.copy_(-mean / std)
        self.initialized.fill_(True)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return (spatial_size(x) * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.initialized):
            self._initialize(x.detach(), inverse=False)
        return x * self.log_scale.exp() + self.bias, self._logdet(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.initialized):
            self._initialize(y.detach(), inverse=True)
        return (y - self.bias) * torch.exp(-self.log_scale), self._logdet(y)
