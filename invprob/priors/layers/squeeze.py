"""Squeeze (space to channels) and upsqueeze (channels to space); volume preserving."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import FlowLayer


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: each 2x2 block becomes four channels."""
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"squeeze: height and width must be even, got {tuple(x.shape[2:])}")
    return F.pixel_unshuffle(x, 2)


def upsqueeze(x: torch.Tensor) -> torch.Tensor:
    """``(B, 4C, H, W) -> (B, C, 2H, 2W)``, the inverse of :func:`squeeze`."""
    if x.shape[1] % 4:
        raise ValueError(f"upsqueeze: channels must be a multiple of 4, got {x.shape[1]}")
    return F.pixel_shuffle(x, 2)


class Squeeze(FlowLayer):
    """``forward`` = :func:`squeeze`, ``inverse`` = :func:`upsqueeze`; ``logdet = 0`` (a permutation).

    Example:
        >>> import torch
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> y, _ = Squeeze()(x)
        >>> y.shape, torch.equal(Squeeze().inverse(y)[0], x)
        (torch.Size([1, 4, 2, 2]), True)
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return squeeze(x), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return upsqueeze(y), y.new_zeros(y.shape[0])

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = in_shape
        return (4 * c, h // 2, w // 2)


class Upsqueeze(FlowLayer):
    """``forward`` = :func:`upsqueeze` (used when generating: resolution grows), ``inverse`` = squeeze."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return upsqueeze(x), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return squeeze(y), y.new_zeros(y.shape[0])

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = in_shape
        return (c // 4, 2 * h, 2 * w)
