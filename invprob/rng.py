"""Seeded random draws that give the same numbers on every device.

A ``torch.Generator`` lives on one device, and CUDA and CPU generators of the same seed produce
different streams. Every random draw of the package therefore goes through :func:`randn`: the
numbers are drawn on the CPU from the (CPU) generator and then moved to the target device and
dtype, so a seeded run is identical on CPU and GPU.

Example:
    >>> import torch
    >>> a = randn((2, 3), generator=torch.Generator().manual_seed(0))
    >>> b = randn((2, 3), like=torch.zeros(1), generator=torch.Generator().manual_seed(0))
    >>> bool(torch.equal(a, b)), tuple(b.shape), b.dtype
    (True, (2, 3), torch.float32)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def randn(
    shape: Sequence[int],
    *,
    like: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard normal draws of ``shape`` on ``like``'s (or the given) device and dtype.

    Drawn on the CPU in float32 or float64 (the target dtype's precision) from ``generator``;
    ``dtype``/``device`` override those of ``like``; default float32 on the CPU.
    """
    dtype = dtype or (like.dtype if like is not None else torch.float32)
    device = device or (like.device if like is not None else "cpu")
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return torch.randn(tuple(shape), generator=generator, dtype=draw_dtype).to(device=device, dtype=dtype)


def randint(high: int, shape: Sequence[int], *, device: torch.device | str | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform integers in ``[0, high)`` drawn on the CPU from ``generator`` and moved to ``device``."""
    return torch.randint(high, tuple(shape), generator=generator).to(device or "cpu")


def rand(shape: Sequence[int], *, like: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform draws in ``[0, 1)`` drawn on the CPU and moved to ``like``'s device and dtype."""
    dtype = like.dtype if like is not None else torch.float32
    device = like.device if like is not None else "cpu"
    return torch.rand(tuple(shape), generator=generator, dtype=dtype).to(device)
