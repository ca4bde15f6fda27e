"""Injective 1x1 convolutions: expand the channels by a factor k.

References: Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for
Inference and Inverse Problems" (sec. 2.1, app. B).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .base import FlowLayer, spatial_size
from .conv1x1 import random_orthogonal

Variant = Literal["linear", "relu"]


class InjectiveConv1x1(FlowLayer):
    """Injective channel expansion ``c -> expansion * c`` applied at every pixel.

    Two variants (Kothari et al. 2021, sec. 2.1):

    - ``"linear"``: ``y = W x`` with ``W`` of shape ``(expansion c, c)``;
    - ``"relu"``: ``y = ReLU([W; -W] x)`` with ``W`` of shape ``(expansion c / 2, c)``
      (``expansion`` even); ``[I, -I] y = W x`` recovers the linear response.

    The left inverse is the Tikhonov-regularised pseudo-inverse
    ``W_gamma^+ = (W^T W + gamma^2 I)^{-1} W^T`` (``gamma = 0``: the Moore-Penrose pseudo-inverse,
    an exact left inverse on the range), applied to ``y`` (linear) or ``[I, -I] y`` (ReLU).

    For both variants ``J^T J = I_{HW} (x) W^T W`` (for ReLU each row of ``W`` appears once, with
    a sign, appendix B.3), hence ``logdet = (1/2) log det(J^T J) = (H W / 2) log det(W^T W)
    = H W sum_i log s_i(W)``. ``W`` starts as ``k`` stacked random orthogonal blocks divided by
    ``sqrt(k)``, so ``W^T W = I`` at initialisation.

    Example:
        >>> import torch
        >>> layer = InjectiveConv1x1(2, expansion=2, gamma=0.0)
        >>> x = torch.randn(3, 2, 4, 4)
        >>> y, logdet = layer(x)  # logdet 0 at initialisation (W^T W = I)
        >>> y.shape, torch.allclose(layer.inverse(y)[0], x, atol=1e-5), float(logdet.detach().abs().max()) < 1e-5
        (torch.Size([3, 4, 4, 4]), True, True)
    """

    def __init__(self, channels: int, expansion: int = 2, variant: Variant = "linear", gamma: float = 1e-3) -> None:
        super().__init__()
        if variant not in ("linear", "relu"):
            raise ValueError(f"variant: expected 'linear' or 'relu', got {variant!r}")
        if expansion < 1 or (variant == "relu" and expansion % 2):
            raise ValueError(f"expansion: expected an int >= 1 (even for the ReLU variant), got {expansion}")
        if not gamma >= 0:
            raise ValueError(f"gamma: expected a number >= 0, got {gamma}")
        self.channels, self.expansion, self.variant, self.gamma = channels, expansion, variant, float(gamma)
        blocks = expansion if variant == "linear" else expansion // 2
        weight = torch.cat([random_orthogonal(channels, channels) for _ in range(blocks)]) / blocks**0.5
        self.weight = nn.Parameter(weight)

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = in_shape
        return (self.expansion * c, h, w)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        log_det_gram = self.from_weight("logdet", self.weight, lambda: torch.linalg.slogdet(self.weight.T @ self.weight)[1])
        return (0.5 * spatial_size(x) * log_det_gram).expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] != self.channels:
            raise ValueError(f"InjectiveConv1x1: expected {self.channels} input channels, got {x.shape[1]}")
        y = torch.einsum("oc,bchw->bohw", self.weight, x)
        if self.variant == "relu":
            y = torch.relu(torch.cat([y, -y], dim=1))
        return y, self._logdet(x)

    def pinv_matrix(self) -> torch.Tensor:
        """``(W^T W + gamma^2 I)^{-1} W^T``, shape ``(c, rows of W)``."""
        return self.from_weight("pinv", self.weight, self._pinv_matrix)

    def _pinv_matrix(self) -> torch.Tensor:
        gram = self.weight.T @ self.weight
        eye = torch.eye(self.channels, dtype=gram.dtype, device=gram.device)
        return torch.linalg.solve(gram + self.gamma**2 * eye, self.weight.T)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if y.shape[1] != self.expansion * self.channels:
            raise ValueError(
                f"InjectiveConv1x1: expected {self.expansion * self.channels} channels to invert, got {y.shape[1]}"
            )
        if self.variant == "relu":
            positive, negative = y.chunk(2, dim=1)
            y = positive - negative
        x = torch.einsum("co,bohw->bchw", self.pinv_matrix(), y)
        return x, self._logdet(x)
