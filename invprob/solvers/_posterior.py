"""Pieces shared by the posterior samplers: the log-posterior, noise levels, checks, sample summaries.

Every sampler targets, for a measurement ``y = A x + n`` with ``n ~ N(0, sigma^2 I)``,

    log p(x | y) = log p_X(x) - ||A x - y||^2 / (2 sigma^2) + const,

in the image space (Ambient VI) or, for ``x = f(z)``, in the prior's latent space,

    log p(z | y) = log p_Z(z) - ||A f(z) - y||^2 / (2 sigma^2) + const.

``sigma`` is one number for the whole batch or one per image (:func:`noise_levels`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field

from ..operators.base import Operator
from ..priors.base import Prior
from .base import sigma_per_sample

LogDensity = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Sigma = float | torch.Tensor


def data_fit(op: Operator, x: torch.Tensor, y: torch.Tensor, sigma: Sigma) -> torch.Tensor:
    """``||A(x_i) - y_i||^2 / (2 sigma_i^2)`` per row: the Gaussian negative log-likelihood up to a constant.

    ``y`` has one row per row of ``x`` or a single row shared by all of them; ``sigma`` is a number
    or a tensor with one value per row of ``x`` (or a single value).

    Example:
        >>> import torch
        >>> from invprob.operators import Identity
        >>> data_fit(Identity((2,)), torch.zeros(2, 2), torch.ones(1, 2), torch.tensor([1.0, 0.5])).tolist()
        [1.0, 4.0]
    """
    if y.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"y: expected 1 or {x.shape[0]} measurements (one per row of x), got {y.shape[0]}")
    if isinstance(sigma, torch.Tensor) and sigma.numel() not in (1, x.shape[0]):
        raise ValueError(f"sigma: expected 1 or {x.shape[0]} noise levels (one per row of x), got {sigma.numel()}")
    residual = op(x) - y
    scale = sigma.flatten() if isinstance(sigma, torch.Tensor) else sigma
    return residual.flatten(1).pow(2).sum(1) / (2.0 * scale**2)


def latent_log_joint(
    prior: Prior, op: Operator, z: torch.Tensor, y: torch.Tensor, sigma: Sigma
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, log p_Z(z) - ||A x - y||^2 / (2 sigma^2), data fit)`` with ``x = f(z)``, per row of ``z``."""
    x = prior.decode(z)
    fit = data_fit(op, x, y, sigma)
    return x, prior.latent_log_prob(z) - fit, fit


def image_log_joint(
    prior: Prior, op: Operator, v: torch.Tensor, y: torch.Tensor, sigma: Sigma
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, log p_X(x) - ||A x - y||^2 / (2 sigma^2), data fit)`` for flattened images ``v = vec(x)``."""
    x = v.reshape(v.shape[0], *prior.data_shape)
    fit = data_fit(op, x, y, sigma)
    return x, prior.log_prob(x) - fit, fit


def latent_log_posterior(prior: Prior, op: Operator, y: torch.Tensor, sigma: Sigma) -> LogDensity:
    """``z -> (log p_Z(z) - ||A f(z) - y||^2 / (2 sigma^2), data-fit term)``: the unnormalised ``log p(z | y)``.

    ``y`` (one row per row of ``z``, or one shared row) is detached: the measurement is data, not
    part of a graph.
    """
    y = y.detach()

    def log_density(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, log_p, fit = latent_log_joint(prior, op, z, y, sigma)
        return log_p, fit

    return log_density


def progress_option() -> Any:
    """The ``progress`` option of every sampler (passed to :func:`invprob.solvers.iterate`)."""
    return Field(
        None,
        description="progress: True shows it (a bar on a terminal, timed lines in log files), False hides it, "
        "None leaves it to the driver's default",
    )


def noise_levels(sigma: Any, y: torch.Tensor) -> torch.Tensor:
    """The noise level as a ``(B,)`` tensor on ``y``'s device and dtype (a scalar is broadcast).

    Raises ``ValueError`` naming ``sigma`` unless it is positive and finite, one value or ``B``.
    """
    if sigma is None:
        raise ValueError("sigma: expected the noise standard deviation (a positive number or one per image), got None")
    out = sigma_per_sample(sigma, y)
    assert out is not None
    return out


def validate_noise_level(value: Any) -> Any:
    """Options validator: accept a positive number, or a tensor/array/list of them (one per image).

    Returns a float or a list of floats; raises ``ValueError`` with the received value otherwise
    (bools, NaN, Inf, zero and negative values, an empty list).
    """
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = [float(v) for v in value.reshape(-1).tolist()]
        if len(value) == 1:
            value = value[0]
    values = value if isinstance(value, (list, tuple)) else [value]
    ok = bool(values) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values
    )
    if not ok:
        raise ValueError(f"expected a positive finite noise level (a number, or one per image), got {value!r}")
    return [float(v) for v in values] if isinstance(value, (list, tuple)) else float(value)


def check_run(y: torch.Tensor, generator: Any = None, callback: Any = None) -> int:
    """Check a sampler's call before any work; return the batch size of ``y``.

    Raises ``ValueError`` for an empty batch and ``TypeError`` for a ``generator`` that is not a
    ``torch.Generator`` or a ``callback`` that is not callable (each naming the argument).
    """
    if y.shape[0] == 0:
        raise ValueError(f"y: expected at least one measurement, got an empty batch of shape {tuple(y.shape)}")
    check_generator(generator)
    if callback is not None and not callable(callback):
        raise TypeError(
            "callback: expected a callable callback(iteration, x, info) or None, "
            f"got {type(callback).__name__} {callback!r}"
        )
    return int(y.shape[0])


def check_generator(generator: Any) -> None:
    """Raise ``TypeError`` unless ``generator`` is None or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__} {generator!r}")


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
