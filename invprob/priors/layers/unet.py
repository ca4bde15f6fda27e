"""A small U-Net used as the scale/shift network of affine couplings.

References: Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for
Inference and Inverse Problems" (sec. 2.2, app. A).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SmallUNet(nn.Module):
    """Conv net ``in_channels -> out_channels`` at the input resolution.

    ``depth`` levels of 2x average-pool downsampling (reduced automatically while the spatial size
    allows it), each level two 3x3 convolutions with ``hidden`` channels and ReLU,
    nearest upsampling with skip connections on the way back. ``depth = 0`` is a plain conv
    stack; on a 1x1 input the convolutions are 1x1 (an MLP on the channels). The output
    convolution starts at zero, so a coupling built on it starts as a constant map.

    Example:
        >>> import torch
        >>> net = SmallUNet(2, 4, hidden=4, depth=1, spatial=8)
        >>> net(torch.randn(1, 2, 8, 8)).shape  # the output layer starts at zero
        torch.Size([1, 4, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 32, depth: int = 2, spatial: int = 8) -> None:
        super().__init__()
        levels = 0
        while levels < depth and spatial % (2 ** (levels + 1)) == 0 and spatial // 2 ** (levels + 1) >= 2:
            levels += 1
        kernel = 3 if spatial > 1 else 1
        widths = [hidden] * (levels + 1)
        self.down = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.down.append(_block(previous, width, kernel))
            previous = width
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i], kernel) for i in reversed(range(levels)))
        self.out = nn.Conv2d(widths[0], out_channels, kernel, padding=kernel // 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.out(x)


def _block(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    pad = kernel // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=pad),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, kernel, padding=pad),
        nn.ReLU(),
    )
