"""Measurement noise at a given SNR or standard deviation."""

from __future__ import annotations

import torch

from .._checks import check_finite, check_float


def add_noise(
    y: torch.Tensor,
    snr_db: float | None = None,
    sigma: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add white Gaussian noise to a batch of measurements ``y`` of shape ``(B, ...)``.

    Give exactly one of ``snr_db`` and ``sigma``. With ``snr_db``, each sample gets
    ``sigma_b = RMS(y_b) * 10**(-snr_db / 20)``, so that ``20 log10(RMS(y_b) / sigma_b) = snr_db``
    (the papers' "30 dB noise"); a sample that is all zero has no RMS to be relative to and is
    refused (give ``sigma`` instead). Returns the noisy batch and the per-sample ``sigma`` (shape
    ``(B,)``). ``y`` must be a real floating, finite tensor with ``B >= 1``. The noise is drawn on
    the CPU from ``generator`` (reproducible across devices) and moved to ``y``.

    References: K. Kothari, A. Khorashadizadeh, M. de Hoop, I. Dokmanić (2021), "Trumpets:
    Injective Flows for Inference and Inverse Problems" (30 dB measurement noise).

    Example:
        >>> y = torch.ones(2, 100)
        >>> noisy, sigma = add_noise(y, snr_db=20, generator=torch.Generator().manual_seed(0))
        >>> noisy.shape, [round(s, 6) for s in sigma.tolist()]
        (torch.Size([2, 100]), [0.1, 0.1])
    """
    if not isinstance(y, torch.Tensor) or y.dim() < 2:
        raise ValueError(f"y: expected a batched tensor (B, ...), got {getattr(y, 'shape', type(y).__name__)}")
    if y.is_complex() or not y.is_floating_point():
        raise TypeError(f"y: expected a real floating-point tensor, got dtype {y.dtype}; convert it with y.float()")
    if y.shape[0] == 0:
        raise ValueError(f"y: expected a non-empty batch (B >= 1), got shape {tuple(y.shape)}")
    check_finite(y, "y")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__} {generator!r}")
    if (snr_db is None) == (sigma is None):
        raise ValueError("add_noise: give exactly one of snr_db and sigma")
    if snr_db is not None:
        snr_db = check_float(snr_db, "snr_db")
        rms = y.detach().flatten(1).pow(2).mean(1).sqrt()
        zero = (rms == 0).nonzero().flatten().tolist()
        if zero:
            raise ValueError(
                f"y: sample(s) {zero[:5]} are all zero, so snr_db={snr_db:g} (relative to each sample's RMS) "
                "would add no noise; give sigma= instead"
            )
        sigmas = rms * 10.0 ** (-snr_db / 20.0)
    else:
        sigma = check_float(sigma, "sigma", minimum=0.0)
        sigmas = torch.full((y.shape[0],), sigma, dtype=y.dtype, device=y.device)
    noise = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
    return y + sigmas.view((-1,) + (1,) * (y.dim() - 1)) * noise, sigmas
