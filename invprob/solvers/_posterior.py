"""Pieces shared by the posterior samplers: the log-posterior, capability checks, sample summaries."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..operators.base import Operator
from ..priors.base import Prior

LogDensity = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def data_fit(op: Operator, x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """``||A(x_i) - y_i||^2 / (2 sigma^2)`` per row: the Gaussian negative log-likelihood up to a constant.

    ``y`` has one row per row of ``x`` or a single row shared by all of them.
    """
    if y.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"y: expected 1 or {x.shape[0]} measurements (one per row of x), got {y.shape[0]}")
    residual = op(x) - y
    return residual.flatten(1).pow(2).sum(1) / (2.0 * sigma**2)


def latent_log_posterior(prior: Prior, op: Operator, y: torch.Tensor, sigma: float) -> LogDensity:
    """``z -> (log p_Z(z) - ||A f(z) - y||^2 / (2 sigma^2), data-fit term)``: the unnormalised ``log p(z | y)``.

    This is the negative of the integrand of paper 003 eq. 4 (paper 000 eq. 10 divided by
    ``sigma^2``) without the entropy term. ``y`` is detached: the measurement is data, not part of a graph.
    """
    y = y.detach()

    def log_density(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fit = data_fit(op, prior.decode(z), y, sigma)
        return prior.latent_log_prob(z) - fit, fit

    return log_density


def image_log_posterior(prior: Prior, op: Operator, y: torch.Tensor, sigma: float) -> LogDensity:
    """``v -> log p_X(x) - ||A x - y||^2 / (2 sigma^2)`` for flattened images ``v = vec(x)`` (Ambient VI)."""
    y = y.detach()

    def log_density(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = v.reshape(v.shape[0], *prior.data_shape)
        fit = data_fit(op, x, y, sigma)
        return prior.log_prob(x) - fit, fit

    return log_density


def require_latent_density(prior: Prior, method: str) -> None:
    """Raise ``TypeError`` unless ``prior.latent_log_prob`` can be evaluated (latent samplers need it)."""
    z = torch.zeros(1, prior.latent_dim, dtype=prior.dtype, device=prior.device)
    try:
        prior.latent_log_prob(z)
    except NotImplementedError:
        raise TypeError(
            f"prior: method {method!r} samples the latent space and needs prior.latent_log_prob, "
            f"which {type(prior).__name__} does not provide"
        ) from None


def require_image_density(prior: Prior, method: str) -> None:
    """Raise ``TypeError`` unless ``prior.log_prob`` can be evaluated (Ambient VI needs it)."""
    x = torch.zeros(1, *prior.data_shape, dtype=prior.dtype, device=prior.device)
    try:
        prior.log_prob(x)
    except NotImplementedError:
        raise TypeError(
            f"prior: method {method!r} works in image space and needs prior.log_prob, "
            f"which {type(prior).__name__} does not provide"
        ) from None


def summarize(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and standard deviation over axis 1 of ``samples`` ``(B, S, *shape)``.

    The standard deviation uses ``S - 1`` (unbiased variance) and is 0 for a single sample.
    """
    mean = samples.mean(1)
    if samples.shape[1] == 1:
        return mean, torch.zeros_like(mean)
    return mean, samples.std(1)
