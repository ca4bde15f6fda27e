"""Measurement noise at a given SNR or standard deviation."""

from __future__ import annotations

import math

import torch

from .._checks import check_finite


def add_noise(
    y: torch.Tensor,
    snr_db: float | None = None,
    sigma: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add white Gaussian noise to a batch of measurements ``y`` of shape ``(B, ...)``.

    Give exactly one of ``snr_db`` and ``sigma``. With ``snr_db``, each sample gets
    ``sigma_b = RMS(y_b) * 10**(-snr_db / 20)``, so that ``20 log10(RMS(y_b) / sigma_b) = snr_db``
    (the papers' "30 dB noise"). Returns the noisy batch and the per-sample ``sigma`` (shape ``(B,)``).
    The noise is drawn on the CPU from ``generator`` (reproducible across devices) and moved to ``y``.
    """
    if not isinstance(y, torch.Tensor) or y.dim() < 2:
        raise ValueError(f"y: expected a batched tensor (B, ...), got {getattr(y, 'shape', type(y).__name__)}")
    check_finite(y, "y")
    if (snr_db is None) == (sigma is None):
        raise ValueError("add_noise: give exactly one of snr_db and sigma")
    if snr_db is not None:
        if not isinstance(snr_db, (int, float)) or not math.isfinite(snr_db):
            raise ValueError(f"snr_db: expected a finite number, got {snr_db!r}")
        rms = y.detach().flatten(1).pow(2).mean(1).sqrt()
        sigmas = rms * 10.0 ** (-float(snr_db) / 20.0)
    else:
        if not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"sigma: expected a finite number >= 0, got {sigma!r}")
        sigmas = torch.full((y.shape[0],), float(sigma), dtype=y.dtype, device=y.device)
    noise = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
    return y + sigmas.view((-1,) + (1,) * (y.dim() - 1)) * noise, sigmas
