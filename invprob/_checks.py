"""Argument checks shared by the whole package.

Every public function validates its inputs with these helpers so that a bad argument fails with a
message naming the argument, the expected value and the received one, instead of broadcasting
silently or failing deep inside torch.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch


def as_shape(shape: Sequence[int] | int, name: str) -> tuple[int, ...]:
    """Return ``shape`` as a tuple of positive ints, or raise naming ``name``."""
    if isinstance(shape, numbers.Integral):
        shape = (int(shape),)
    try:
        out = tuple(shape)
    except TypeError:
        raise TypeError(f"{name}: expected a tuple of positive ints, got {shape!r}") from None
    if not out or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in out):
        raise ValueError(f"{name}: expected a non-empty tuple of positive ints, got {shape!r}")
    return tuple(int(s) for s in out)


def as_image_shape(shape: Sequence[int], name: str = "in_shape") -> tuple[int, int, int]:
    """Return ``shape`` as ``(C, H, W)``, or raise naming ``name``."""
    out = as_shape(shape, name)
    if len(out) != 3:
        raise ValueError(f"{name}: expected an image shape (C, H, W), got {out}")
    return out  # type: ignore[return-value]


def check_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int (bools rejected), checking ``value >= minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def check_float(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
) -> float:
    """Return ``value`` as a finite float (bools rejected), checking ``minimum <= value <= maximum``.

    With ``strict=True`` the bounds are exclusive. The error names ``name``, the expected range and
    the received value.

    Example:
        >>> check_float(0.5, "level", minimum=0, maximum=1, strict=True)
        0.5
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    out = float(value)
    if not np.isfinite(out):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    low_ok = minimum is None or (out > minimum if strict else out >= minimum)
    high_ok = maximum is None or (out < maximum if strict else out <= maximum)
    if not (low_ok and high_ok):
        lo = "-inf" if minimum is None else f"{minimum:g}"
        hi = "inf" if maximum is None else f"{maximum:g}"
        bounds = f"({lo}, {hi})" if strict else f"[{lo}, {hi}]"
        raise ValueError(f"{name}: expected a number in {bounds}, got {value!r}")
    return out


def check_batch(x: object, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Check that ``x`` is a floating tensor of shape ``(B, *shape)`` and return it.

    Raises ``TypeError`` for non-tensors and non-floating dtypes and ``ValueError`` for a wrong
    number of dimensions or a wrong trailing shape; the message names ``name``, the expected shape
    and the received one.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (B, {_fmt(shape)}), got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name}: expected shape (B, {_fmt(shape)}), got {tuple(x.shape)}")
    return x


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf; return ``x`` otherwise."""
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: contains {n_bad} non-finite value(s) (NaN or Inf)")
    return x


def to_tensor(x: object, name: str, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Convert a NumPy array (or tensor) to a floating torch tensor; other types raise TypeError."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.number):
            raise TypeError(f"{name}: expected a numeric array, got dtype {x.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(x))
        return t.to(dtype or (torch.float64 if x.dtype == np.float64 else torch.float32))
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _fmt(shape: tuple[int, ...]) -> str:
    return ", ".join(str(s) for s in shape)
