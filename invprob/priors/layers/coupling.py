"""Affine coupling: a bounded scale and a U-Net conditioner on images, or an MLP on vectors.

References: Dinh, Sohl-Dickstein, Bengio 2017, "Density estimation using Real NVP"; Kothari,
Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for Inference and Inverse
Problems" (sec. 2.1, app. A).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from .base import FlowLayer
from .linear import soft_clamp
from .mlp import ResidualMLP
from .unet import SmallUNet

Mask = Literal["channel", "checkerboard"]
Scale = Literal["sigmoid", "tanh"]
Conditioner = Literal["unet", "mlp"]

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

    For vectors ``(B, C)`` (the pre-generator of the composed-flow samplers) use
    ``conditioner="mlp"``: ``s`` and ``b`` come from a :class:`ResidualMLP` (initialised from
    ``generator``) of ``[x_a, h]``, ``h`` an optional context of size ``context_dim`` passed as
    ``forward(x, context)``; and ``scale="tanh"`` gives ``log s = 3 tanh(h / 3)``, a scale in
    ``(e^-3, e^3)`` with ``s(0) = 1`` (both directions, unlike the contracting default).

    Example:
        >>> import torch
        >>> layer = AffineCoupling(4, conditioner="mlp", scale="tanh", context_dim=2, hidden=8)
        >>> x, h = torch.randn(3, 4), torch.randn(3, 2)
        >>> y, logdet = layer(x, h)
        >>> torch.equal(y, x), logdet.tolist()  # the output layer starts at zero: the identity
        (True, [0.0, 0.0, 0.0])
    """

    def __init__(
        self,
        channels: int,
        spatial: int = 1,
        *,
        mask: Mask = "channel",
        flip: bool = False,
        hidden: int = 32,
        depth: int = 2,
        scale_range: tuple[float, float] = CONTRACTING,
        scale: Scale = "sigmoid",
        conditioner: Conditioner = "unet",
        context_dim: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        bounds = tuple(float(v) for v in scale_range)
        if len(bounds) != 2 or not 0 < bounds[0] < min(bounds[1], 1.0):
            raise ValueError(f"scale_range: expected 0 < low < high and low < 1, got {tuple(scale_range)}")
        self.scale_range = bounds
        if mask not in ("channel", "checkerboard"):
            raise ValueError(f"mask: expected 'channel' or 'checkerboard', got {mask!r}")
        if scale not in ("sigmoid", "tanh"):
            raise ValueError(f"scale: expected 'sigmoid' or 'tanh', got {scale!r}")
        if conditioner not in ("unet", "mlp"):
            raise ValueError(f"conditioner: expected 'unet' or 'mlp', got {conditioner!r}")
        if mask == "channel" and channels < 2:
            raise ValueError(f"a channel coupling needs at least 2 channels, got {channels}")
        if mask == "checkerboard" and (spatial < 2 or conditioner == "mlp"):
            raise ValueError("a checkerboard coupling needs images of at least 2x2 pixels and the 'unet' conditioner")
        if context_dim and conditioner != "mlp":
            raise ValueError(f"context_dim: a context needs conditioner='mlp', got context_dim={context_dim}")
        self.mask, self.flip, self.channels, self.scale = mask, flip, channels, scale
        self.conditional = context_dim > 0
        if mask == "channel":
            n_in, n_out = channels // 2, channels - channels // 2
        else:
            n_in, n_out = channels, channels
        if conditioner == "mlp":
            self.net: nn.Module = ResidualMLP(n_in + context_dim, 2 * n_out, hidden, generator)
        else:
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

    def _scale_shift(
        self, cond: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(s, log s, b)`` from the conditioning part (and the context)."""
        if self.conditional:
            if context is None:
                raise ValueError("AffineCoupling: this coupling is conditional; a context is required")
            cond = torch.cat([cond, context], dim=1)
        elif context is not None:
            raise ValueError("AffineCoupling: this coupling is unconditional; context must be None")
        h, shift = self.net(cond).chunk(2, dim=1)
        if self.scale == "tanh":
            log_scale = soft_clamp(h)
            return log_scale.exp(), log_scale, shift
        scale = bounded_scale(h, self.scale_range)
        return scale, scale.log(), shift

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "channel":
            xa, xb = self._split(x)
            scale, log_scale, shift = self._scale_shift(xa, context)
            return self._merge(xa, xb * scale + shift), log_scale.flatten(1).sum(1)
        m = self._checkerboard(x)
        scale, log_scale, shift = self._scale_shift(x * m, context)
        y = x * m + (1 - m) * (x * scale + shift)
        return y, ((1 - m) * log_scale).flatten(1).sum(1)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "channel":
            ya, yb = self._split(y)
            scale, log_scale, shift = self._scale_shift(ya, context)
            return self._merge(ya, (yb - shift) / scale), log_scale.flatten(1).sum(1)
        m = self._checkerboard(y)
        scale, log_scale, shift = self._scale_shift(y * m, context)
        x = y * m + (1 - m) * (y - shift) / scale
        return x, ((1 - m) * log_scale).flatten(1).sum(1)
