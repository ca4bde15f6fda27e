"""Argument checks shared by the modules of :mod:`invprob.uq`."""

from __future__ import annotations

import torch

from .._checks import check_finite, check_float, check_int


def check_samples(samples: object, dim: int, minimum: int = 1) -> int:
    """Check ``samples`` (a finite floating tensor with at least ``minimum`` entries along ``dim``); return ``dim >= 0``."""
    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point():
        raise TypeError(f"samples: expected a floating-point tensor, got {type(samples).__name__}")
    check_int(dim, "dim")
    if not -samples.dim() <= dim < samples.dim():
        raise ValueError(f"dim: {dim} is out of range for samples of shape {tuple(samples.shape)}")
    check_finite(samples, "samples")
    n = samples.shape[dim]
    if n < minimum:
        raise ValueError(f"samples: expected at least {minimum} sample(s) along dim {dim}, got {n}")
    return dim % samples.dim()


def check_truth(samples: torch.Tensor, x_true: object, dim: int) -> torch.Tensor:
    """Check that ``x_true`` has the shape of ``samples`` without the sample axis ``dim``."""
    expected = samples.shape[:dim] + samples.shape[dim + 1 :]
    if not isinstance(x_true, torch.Tensor) or x_true.shape != expected:
        got = tuple(x_true.shape) if isinstance(x_true, torch.Tensor) else type(x_true).__name__
        raise ValueError(f"x_true: expected shape {tuple(expected)} (samples without the sample axis), got {got}")
    return x_true


def check_level(level: object, name: str = "level") -> float:
    """A nominal level as a float strictly inside ``(0, 1)``."""
    return check_float(level, name, minimum=0, maximum=1, strict=True)


def check_levels(levels: object, name: str = "levels") -> tuple[float, ...]:
    """A non-empty sequence of levels in ``(0, 1)`` as floats."""
    try:
        values = tuple(levels)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name}: expected a sequence of numbers in (0, 1), got {levels!r}") from None
    if not values:
        raise ValueError(f"{name}: expected at least one level in (0, 1), got none")
    return tuple(check_level(level, name) for level in values)


def check_power(p: object) -> float:
    """The exponent ``p > 0`` of a deviation ``E |X - <X>|^p``."""
    return check_float(p, "p", minimum=0, strict=True)
