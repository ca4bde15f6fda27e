"""Reconstruction quality, one value per batch element.

Every metric takes the ground truth ``x`` and the estimate ``x_hat`` as batches of the same shape
``(B, ...)`` (torch tensors or NumPy arrays) and returns a float64 tensor of shape ``(B,)``:

- :func:`snr`: ``20 log10(||x|| / ||x - x_hat||)`` in dB, the TRUMPET paper's measure (Table 3);
- :func:`psnr`: ``10 log10(R^2 / MSE)`` in dB with the data range ``R``;
- :func:`ssim`: structural similarity (scikit-image), per image;
- :func:`relative_error`: ``||x - x_hat|| / ||x||``.

A perfect estimate gives ``inf`` for SNR and PSNR.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity

from ._checks import check_finite, to_tensor


def snr(x: torch.Tensor | np.ndarray, x_hat: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Signal-to-noise ratio ``20 log10(||x_b|| / ||x_b - x_hat_b||)`` in dB, shape ``(B,)``."""
    truth, estimate = _pair(x, x_hat)
    return 20 * torch.log10(_norms(truth) / _norms(truth - estimate))


def relative_error(x: torch.Tensor | np.ndarray, x_hat: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``||x_b - x_hat_b|| / ||x_b||`` per batch element, shape ``(B,)``."""
    truth, estimate = _pair(x, x_hat)
    return _norms(truth - estimate) / _norms(truth)


def psnr(
    x: torch.Tensor | np.ndarray, x_hat: torch.Tensor | np.ndarray, data_range: float | None = None
) -> torch.Tensor:
    """Peak SNR ``10 log10(R^2 / mean((x_b - x_hat_b)^2))`` in dB, shape ``(B,)``.

    ``data_range`` ``R`` is the span of possible values (1 for images in [0, 1]); by default each
    ground-truth image's own ``max - min``.
    """
    truth, estimate = _pair(x, x_hat)
    mse = (truth - estimate).flatten(1).pow(2).mean(1)
    span = _ranges(truth, data_range)
    return 10 * torch.log10(span.pow(2) / mse)


def ssim(x: torch.Tensor | np.ndarray, x_hat: torch.Tensor | np.ndarray, data_range: float | None = None) -> torch.Tensor:
    """Structural similarity (``skimage.metrics.structural_similarity``) of each image, shape ``(B,)``.

    Images are ``(B, H, W)`` or ``(B, C, H, W)`` (channels averaged, as scikit-image does with
    ``channel_axis``). ``data_range`` as in :func:`psnr` (default: each ground truth's
    ``max - min``). scikit-image's default 7x7 uniform window is shrunk to the largest
    odd size that fits images smaller than 7 pixels.
    """
    truth, estimate = _pair(x, x_hat)
    if truth.dim() not in (3, 4):
        raise ValueError(f"ssim: expected images (B, H, W) or (B, C, H, W), got shape {tuple(truth.shape)}")
    spans = _ranges(truth, data_range)
    side = min(truth.shape[-2:])
    if side < 3:
        raise ValueError(f"ssim: images must be at least 3x3 pixels, got {tuple(truth.shape[-2:])}")
    window = min(7, side if side % 2 else side - 1)
    values = [
        _ssim_one(t.numpy(), e.numpy(), float(span), window) for t, e, span in zip(truth, estimate, spans)
    ]
    return torch.tensor(values, dtype=torch.float64)


def _ssim_one(truth: np.ndarray, estimate: np.ndarray, span: float, window: int) -> float:
    if truth.ndim == 3 and truth.shape[0] == 1:
        truth, estimate = truth[0], estimate[0]
    channel_axis = 0 if truth.ndim == 3 else None
    return float(structural_similarity(truth, estimate, data_range=span, win_size=window, channel_axis=channel_axis))


def _pair(x: torch.Tensor | np.ndarray, x_hat: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Both batches as finite float64 CPU tensors of the same shape ``(B, ...)``."""
    truth = check_finite(to_tensor(x, "x").detach().to("cpu", torch.float64), "x")
    estimate = check_finite(to_tensor(x_hat, "x_hat").detach().to("cpu", torch.float64), "x_hat")
    if truth.shape != estimate.shape:
        raise ValueError(f"x_hat: expected the shape of x {tuple(truth.shape)}, got {tuple(estimate.shape)}")
    if truth.dim() < 2:
        raise ValueError(f"x: expected a batch (B, ...), got shape {tuple(truth.shape)}")
    return truth, estimate


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _ranges(truth: torch.Tensor, data_range: float | None) -> torch.Tensor:
    if data_range is not None:
        if not isinstance(data_range, (int, float)) or not data_range > 0 or not np.isfinite(data_range):
            raise ValueError(f"data_range: expected a positive number, got {data_range!r}")
        return torch.full((truth.shape[0],), float(data_range), dtype=torch.float64)
    flat = truth.flatten(1)
    span = flat.max(1).values - flat.min(1).values
    if not bool((span > 0).all()):
        raise ValueError("data_range: a ground-truth image is constant; give data_range explicitly")
    return span
