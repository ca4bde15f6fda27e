"""Pixel masks: random pixel dropping and a square hole (inpainting).

A mask operator keeps the image shape and zeroes the dropped pixels, ``A x = M * x`` with ``M`` a
0/1 image of shape ``(1, H, W)`` shared by all channels. ``A`` is diagonal and idempotent, so
``A^T = A`` and ``A^+ = A``.
"""

from __future__ import annotations

import torch

from .._checks import as_image_shape, check_int
from .base import LinearOperator


class _Mask(LinearOperator):
    def __init__(self, in_shape: tuple[int, int, int], mask: torch.Tensor) -> None:
        super().__init__(in_shape, in_shape)
        self.register_buffer("mask", mask.to(torch.float64))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.to(x)

    _adjoint = _forward

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        return self._forward(y)

    @property
    def kept_fraction(self) -> float:
        """Fraction of pixels that are measured."""
        return float(self.mask.mean())


class RandomMask(_Mask):
    """Drop each pixel independently with probability ``p`` (the paper's RandMask, p = 0.15)."""

    def __init__(self, in_shape: tuple[int, int, int], p: float, seed: int = 0) -> None:
        in_shape = as_image_shape(in_shape)
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a drop probability in [0, 1), got {p!r}")
        seed = check_int(seed, "seed", minimum=0)
        gen = torch.Generator().manual_seed(seed)
        keep = torch.rand((1, *in_shape[1:]), generator=gen, dtype=torch.float64) >= p
        super().__init__(in_shape, keep)
        self.p = float(p)
        self.seed = seed

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, p={self.p}, seed={self.seed}"


class BlockMask(_Mask):
    """Zero an ``size x size`` square (the paper's "Mask (s)").

    ``center = (row, col)`` is the pixel at the square's centre (for even ``size`` the square spans
    rows ``row - size//2 .. row + size//2 - 1``); by default the image centre ``(H//2, W//2)``.
    """

    def __init__(self, in_shape: tuple[int, int, int], size: int, center: tuple[int, int] | None = None) -> None:
        in_shape = as_image_shape(in_shape)
        size = check_int(size, "size", minimum=1)
        h, w = in_shape[1:]
        if size > min(h, w):
            raise ValueError(f"size: block of {size}x{size} does not fit an image of {h}x{w}")
        if center is None:
            center = (h // 2, w // 2)
        if len(center) != 2:
            raise ValueError(f"center: expected (row, col), got {center!r}")
        row, col = (check_int(c, "center") for c in center)
        top, left = row - size // 2, col - size // 2
        if top < 0 or left < 0 or top + size > h or left + size > w:
            raise ValueError(f"center: a {size}x{size} block at {center} leaves the {h}x{w} image")
        keep = torch.ones((1, h, w), dtype=torch.float64)
        keep[:, top : top + size, left : left + size] = 0.0
        super().__init__(in_shape, keep)
        self.size = size
        self.center = (row, col)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, size={self.size}, center={self.center}"
