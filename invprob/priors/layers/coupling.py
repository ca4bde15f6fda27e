"""Affine coupling with a bounded scale and a U-Net conditioner (paper sec. 2.1, app. A)."""

from __future__ import annotations

import math
from typing import Literal

import torch

from .base import FlowLayer
from .unet import SmallUNet

Mask = Literal["channel", "checkerboard"]

CONTRACTING = (0.01, 1.0)


def scale_offset(scale_range: tuple[float, float]) -> float:
    """Offset ``c`` of :func:`bounded_scale`: ``sigmoid(c) = 0.88`` if the range ends at or below 1, else ``s(0) = 1``."""
    low, high = scale_range
    if high <= 1.0:
        return 2.0
    return math.log((1.0 - low) / (high - 1.0))


def bounded_scale(h: torch.Tensor, scale_range: tuple[float, float] = CONTRACTING) -> torch.Tensor:
    """``s = low + (high - low) sigmoid(h + c)`` in ``(low, high)``, never 0.

    With the default contracting range ``(0.01, 1)``, ``c = 2`` (``s`` about 0.88 at ``h = 0``);
    with a range that contains 1 (e.g. RealNVP's ``(0.5, 2)``), ``c`` makes ``s(0) = 1``.
    """
    low, high = scale_range
    return low + (high - low) * torch.sigmoid(h + scale_offset(scale_range))


class AffineCoupling(FlowLayer):
    """Affine coupling: part ``x_a`` of the input conditions an affine map of the rest ``x_b``.

    In the generative direction (``forward``) ``y_b = s(x_a) * x_b + b(x_a)`` with the scale
    :func:`bounded_scale` in ``scale_range`` (default ``(0.01, 1)``), so ``logdet = sum log s`` over the entries of ``x_b``
    (the Jacobian is triangular), and ``inverse`` is ``x_b = (y_b - b(y_a)) / s(y_a)``; ``x_a``
    passes unchanged. The generative map thus scales ``x_b`` down, never up, which keeps
    ``g(g^dagger(x))`` stable in TRUMPET training (errors from the pseudo-inverses are not
    multiplied by up to ``1 / 0.01`` on the way back to the image). A bijective flow trained by
    maximum likelihood runs the other way, where that range lets every layer expand by up to
    100: RealNVP therefore uses a range around 1 such as ``(0.5, 2)``.

    ``mask="channel"`` splits the channels into halves (the first ``C // 2`` condition, or the
    last ``C // 2`` if ``flip``);
    ``mask="checkerboard"`` splits the pixels by the parity of ``i + j`` (``flip`` swaps the
    parity), which also works with a single channel. ``s`` and ``b`` come from a
    :class:`SmallUNet` whose last layer starts at zero.
    """

    def __init__(
        self,
        channels: int,
        spatial: int,
        *,
        mask: Mask = "channel",
        flip: bool = False,
        hidden: int = 32,
        depth: int = 2,
        scale_range: tuple[float, float] = CONTRACTING,
    ) -> None:
        super().__init__()
        bounds = tuple(float(v) for v in scale_range)
        if len(bounds) != 2 or not 0 < bounds[0] < min(bounds[1], 1.0):
            raise ValueError(f"scale_range: expected 0 < low < high and low < 1, got {tuple(scale_range)}")
        self.scale_range = bounds
        if mask not in ("channel", "checkerboard"):
            raise ValueError(f"mask: expected 'channel' or 'checkerboard', got {mask!r}")
        if mask == "channel" and channels < 2:
            raise ValueError(f"a channel coupling needs at least 2 channels, got {channels}")
        if mask == "checkerboard" and spatial < 2:
            raise ValueError("a checkerboard coupling needs images of at least 2x2 pixels")
        self.mask, self.flip, self.channels = mask, flip, channels
        if mask == "channel":
            n_in, n_out = channels // 2, channels - channels // 2
        else:
            n_in, n_out = channels, channels
        self.net = SmallUNet(n_in, 2 * n_out, hidden=hidden, depth=depth, spatial=spatial)

    def _checkerboard(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        i = torch.arange(h, device=x.device).view(-1, 1)
        j = torch.arange(w, device=x.device).view(1, -1)
        parity = ((i + j) % 2 == (1 if self.flip else 0)).to(x.dtype)
        return parity.view(1, 1, h, w)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(conditioning, transformed)`` channels: first half conditions, or the last half if ``flip``."""
        n_cond = self.channels // 2
        if self.flip:
            return x[:, self.channels - n_cond :], x[:, : self.channels - n_cond]
        return x[:, :n_cond], x[:, n_cond:]

    def _merge(self, cond: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        return torch.cat([rest, cond] if self.flip else [cond, rest], dim=1)

    def _scale_shift(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, shift = self.net(cond).chunk(2, dim=1)
        return bounded_scale(h, self.scale_range), shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "channel":
            xa, xb = self._split(x)
            scale, shift = self._scale_shift(xa)
            return self._merge(xa, xb * scale + shift), scale.log().flatten(1).sum(1)
        m = self._checkerboard(x)
        scale, shift = self._scale_shift(x * m)
        y = x * m + (1 - m) * (x * scale + shift)
        return y, ((1 - m) * scale.log()).flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "channel":
            ya, yb = self._split(y)
            scale, shift = self._scale_shift(ya)
            return self._merge(ya, (yb - shift) / scale), scale.log().flatten(1).sum(1)
        m = self._checkerboard(y)
        scale, shift = self._scale_shift(y * m)
        x = y * m + (1 - m) * (y - shift) / scale
        return x, ((1 - m) * scale.log()).flatten(1).sum(1)
