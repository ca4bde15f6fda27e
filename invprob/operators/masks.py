"""Pixel masks: random pixel dropping, a square hole and a missing half (inpainting).

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
        return x * self.cast_buffer("mask", x)

    _adjoint = _forward

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        return self._forward(y)

    @property
    def kept_fraction(self) -> float:
        """Fraction of pixels that are measured."""
        return float(self.mask.mean())


class RandomMask(_Mask):
    """Each pixel dropped (unobserved) independently with probability ``p``, or kept with ``keep``.

    Give exactly one of ``p`` (drop probability, in ``[0, 1)``) and ``keep`` (keep probability, in
    ``(0, 1]``). ``RandomMask(s, 0.15)`` observes about 85% of the pixels; ``RandomMask(s,
    keep=0.15)`` about 15%. The mask is ``M_ij = [u_ij >= p]`` (or ``[u_ij < keep]``) with ``u``
    uniform draws from a CPU generator seeded with ``seed``, shared by all channels.

    The TRUMPETs paper's text masks pixels with probability p = 0.15 while its reference code keeps
    them with that probability; the two conventions are ``p=0.15`` and ``keep=0.15`` here.

    References: K. Kothari, A. Khorashadizadeh, M. de Hoop, I. Dokmanić (2021), "Trumpets:
    Injective Flows for Inference and Inverse Problems".

    Example:
        >>> drop = RandomMask((1, 32, 32), 0.15, seed=0)
        >>> keep = RandomMask((1, 32, 32), keep=0.15, seed=0)
        >>> abs(drop.kept_fraction - 0.85) < 0.05, abs(keep.kept_fraction - 0.15) < 0.05
        (True, True)
        >>> drop(torch.ones(2, 1, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(self, in_shape: tuple[int, int, int], p: float | None = None, seed: int = 0, *, keep: float | None = None) -> None:
        in_shape = as_image_shape(in_shape)
        if (p is None) == (keep is None):
            raise ValueError(f"RandomMask: expected exactly one of p (drop probability) and keep, got p={p!r}, keep={keep!r}")
        if p is not None and (not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0):
            raise ValueError(f"p: expected a drop probability in [0, 1), got {p!r}")
        if keep is not None and (not isinstance(keep, (int, float)) or isinstance(keep, bool) or not 0.0 < keep <= 1.0):
            raise ValueError(f"keep: expected a keep probability in (0, 1], got {keep!r}")
        seed = check_int(seed, "seed", minimum=0)
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand((1, *in_shape[1:]), generator=gen, dtype=torch.float64)
        kept = u >= p if p is not None else u < keep
        super().__init__(in_shape, kept)
        self.p = None if p is None else float(p)
        self.keep = None if keep is None else float(keep)
        self.seed = seed

    def extra_repr(self) -> str:
        rule = f"p={self.p}" if self.p is not None else f"keep={self.keep}"
        return f"in_shape={self.in_shape}, {rule}, seed={self.seed}"


class BlockMask(_Mask):
    """Zero a ``size x size`` square (the TRUMPETs paper's "Mask (s)"): inpainting of a hole.

    ``center = (row, col)`` is the pixel at the square's centre (for even ``size`` the square spans
    rows ``row - size//2 .. row + size//2 - 1``); by default the image centre ``(H//2, W//2)``, which
    centres the square exactly when ``H``, ``W`` and ``size`` are even.

    References: K. Kothari, A. Khorashadizadeh, M. de Hoop, I. Dokmanić (2021), "Trumpets:
    Injective Flows for Inference and Inverse Problems".

    Example:
        >>> op = BlockMask((1, 8, 8), 4)
        >>> op(torch.ones(1, 1, 8, 8))[0, 0, 2:6, 2:6].abs().sum().item(), op.kept_fraction
        (0.0, 0.75)
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


class HalfMask(_Mask):
    """Leave one half of the image unobserved: ``side`` is the half that is zeroed.

    ``side="bottom"`` zeroes rows ``H // 2 .. H - 1`` (the top half is observed), ``"top"`` rows
    ``0 .. H // 2 - 1``; ``"right"`` and ``"left"`` the same for columns.

    References: J. Whang, E. Lindgren, A. G. Dimakis (2021), "Composing Normalizing Flows for
    Inverse Problems" (inpainting from the observed upper half).

    Example:
        >>> op = HalfMask((1, 4, 4), "bottom")
        >>> op(torch.ones(1, 1, 4, 4))[0, 0].sum(dim=1).tolist()
        [4.0, 4.0, 0.0, 0.0]
    """

    SIDES = ("bottom", "top", "left", "right")

    def __init__(self, in_shape: tuple[int, int, int], side: str = "bottom") -> None:
        in_shape = as_image_shape(in_shape)
        if side not in self.SIDES:
            raise ValueError(f"side: expected one of {self.SIDES}, got {side!r}")
        h, w = in_shape[1:]
        keep = torch.ones((1, h, w), dtype=torch.float64)
        region = {"bottom": (slice(h // 2, h), slice(None)), "top": (slice(0, h // 2), slice(None)),
                  "right": (slice(None), slice(w // 2, w)), "left": (slice(None), slice(0, w // 2))}[side]
        keep[(slice(None), *region)] = 0.0
        super().__init__(in_shape, keep)
        self.side = side

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, side={self.side!r}"
