"""Pixel-wise summaries of posterior samples: mean, standard deviation, mean absolute deviation,
the SNR of every sample and of the posterior mean, and the diversity of a sample set.

Every function takes ``samples`` with the sample axis at ``dim`` (0 by default; ``dim=1`` for a
batched ``Result.samples`` of shape ``(B, S, *shape)``) and reduces over that axis.

References:
    Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for Inference and
    Inverse Problems" (UAI), sec. 4.3 (posterior mean and mean absolute deviation maps);
    Whang, Lindgren, Dimakis 2021, "Composing Normalizing Flows for Inverse Problems" (ICML),
    sec. 4 and 6.2 (per-sample and MMSE SNR).
"""

from __future__ import annotations

import torch

from ..metrics import snr
from ._validate import check_power, check_samples, check_truth


def posterior_mean(samples: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Monte Carlo posterior mean ``<X> = (1/S) sum_s x_s`` (the MMSE estimate).

    Example:
        >>> posterior_mean(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        tensor([2., 3.])
    """
    dim = check_samples(samples, dim)
    return samples.mean(dim)


def posterior_std(samples: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Pixel-wise standard deviation with the unbiased ``1/(S-1)`` variance (needs ``S >= 2``)."""
    dim = check_samples(samples, dim, minimum=2)
    return samples.std(dim)


def mean_absolute_deviation(samples: torch.Tensor, p: float = 1.0, dim: int = 0) -> torch.Tensor:
    """Pixel-wise ``E |X - <X>|^p`` with ``<X>`` the sample mean; ``p = 2`` is the ``1/S`` variance.

    For a Gaussian posterior of standard deviation ``s``, ``p = 1`` gives ``s sqrt(2 / pi)``.

    References:
        Kothari et al. 2021, "Trumpets: Injective Flows for Inference and Inverse Problems", sec. 4.3.
    """
    p = check_power(p)
    dim = check_samples(samples, dim)
    return (samples - samples.mean(dim, keepdim=True)).abs().pow(p).mean(dim)


def _batched_snr(x_true: torch.Tensor, x_hat: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """:func:`invprob.metrics.snr` over the leading ``batch_dims`` axes (none: a single image), float64 on CPU."""
    lead = x_hat.shape[:batch_dims]
    rest = x_hat.shape[batch_dims:]
    values = snr(x_true.reshape(-1, *rest), x_hat.reshape(-1, *rest))
    return values.reshape(lead)


def sample_snr(samples: torch.Tensor, x_true: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """SNR (dB, :func:`invprob.metrics.snr`) of every sample against ``x_true``; shape ``samples.shape[:dim + 1]``.

    ``x_true`` has the shape of ``samples`` without the sample axis.
    """
    dim = check_samples(samples, dim)
    check_truth(samples, x_true, dim)
    return _batched_snr(x_true.unsqueeze(dim).expand_as(samples), samples, dim + 1)


def mmse_snr(samples: torch.Tensor, x_true: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """SNR (dB) of the posterior mean (the MMSE estimate) against ``x_true``; shape ``samples.shape[:dim]``.

    Example:
        >>> truth = torch.ones(2, 2)
        >>> float(mmse_snr(torch.stack([truth * 0.9, truth * 1.1]), truth)) == float("inf")
        True
    """
    dim = check_samples(samples, dim)
    check_truth(samples, x_true, dim)
    return _batched_snr(x_true, samples.mean(dim), dim)


def diversity(samples: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Mean Euclidean distance over all pairs of distinct samples; shape ``samples.shape[:dim]`` (needs ``S >= 2``)."""
    dim = check_samples(samples, dim, minimum=2)
    flat = samples.flatten(dim + 1)
    n = flat.shape[dim]
    distances = torch.cdist(flat, flat)
    return distances.sum((-1, -2)) / (n * (n - 1))
