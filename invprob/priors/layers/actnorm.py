"""Activation normalisation with data-dependent initialisation (Glow)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import FlowLayer


class ActNorm(FlowLayer):
    """Per-channel affine map ``y = x * exp(log_scale) + bias`` on ``(B, C, ...)`` tensors.

    Works on images ``(B, C, H, W)`` and on vectors ``(B, C)``; ``logdet = H W sum_c log_scale_c``
    (``sum_c log_scale_c`` for vectors). With ``data_init=True`` (default) the first batch that
    passes through an uninitialised layer (in either direction) sets the parameters so that the
    data side ``y`` of that batch has zero mean and unit variance per channel: in the normalising
    direction (``inverse``) the output is standardised, in the generative direction the layer
    starts by standardising its input's image. The ``initialized`` flag is a buffer, so loaded
    checkpoints never re-initialise. With ``data_init=False`` the layer starts as the identity.

    Example:
        >>> import torch
        >>> layer = ActNorm(2)
        >>> y, _ = layer.inverse(torch.randn(16, 2, 3, 3) * 5 + 1)
        >>> abs(float(y.detach().mean())) < 1e-5, bool(layer.initialized)
        (True, True)
    """

    def __init__(self, channels: int, eps: float = 1e-6, *, data_init: bool = True) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(not data_init))
        self.eps = eps

    @torch.no_grad()
    def _initialize(self, data_side: torch.Tensor, inverse: bool) -> None:
        dims = (0, *range(2, data_side.dim()))
        mean = data_side.mean(dim=dims, keepdim=True)
        if data_side.numel() > data_side.shape[1]:
            std = data_side.std(dim=dims, keepdim=True, unbiased=False)
        else:
            std = torch.ones_like(mean)
        mean, std = mean.view_as(self.bias), std.clamp_min(self.eps).view_as(self.log_scale)
        if inverse:  # data side is y: choose y = x * std + mean so that x = (y - mean) / std is standardised
            self.log_scale.copy_(std.log())
            self.bias.copy_(mean)
        else:  # data side is the input x: y = (x - mean) / std
            self.log_scale.copy_(-std.log())
            self.bias.copy_(-mean / std)
        self.initialized.fill_(True)

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.log_scale.view(shape), self.bias.view(shape)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return (math.prod(x.shape[2:]) * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.initialized):
            self._initialize(x.detach(), inverse=False)
        log_scale, bias = self._params(x)
        return x * log_scale.exp() + bias, self._logdet(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.initialized):
            self._initialize(y.detach(), inverse=True)
        log_scale, bias = self._params(y)
        return (y - bias) * torch.exp(-log_scale), self._logdet(y)
