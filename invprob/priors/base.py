"""The generative-prior interface every solver talks to.

A prior is a generator ``f: R^d -> R^n`` (``d = latent_dim``, ``n = prod(data_shape)``) with a
density. Solvers use:

- ``decode(z) = f(z)``; ``encode(x) = f^dagger(x)``, an inverse on the range of ``f``;
- ``project(x) = f(f^dagger(x))``, the projection onto the range (identity for bijective flows);
- ``log_prob(x)``: exact, a bound or an estimate, as each subclass documents in ``log_prob_kind``;
- ``latent_log_prob(z)``: the log-density of the latent variable;
- ``sample(n, temperature)``.

Subclasses implement ``_decode``, ``_encode``, ``_log_prob``, ``_latent_log_prob`` and
``sample_latent`` on checked inputs, and ``config()`` returning the constructor keyword arguments
(JSON-serialisable) so that :func:`invprob.priors.io.load_prior_file` can rebuild the model.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from .._checks import as_shape, check_batch, check_finite, check_int

LogProbKind = Literal["exact", "bound", "estimate"]
LOG_2PI = math.log(2 * math.pi)

PRIOR_CLASSES: dict[str, type["Prior"]] = {}


def layers_initialized(module: torch.nn.Module) -> bool:
    """Whether every layer of ``module`` with data-dependent initialisation (ActNorm) has seen data."""
    return all(bool(buffer) for name, buffer in module.named_buffers() if name.endswith("initialized"))


class Prior(nn.Module, ABC):
    """Base class of the generative priors; see the module docstring for the contract."""

    log_prob_kind: ClassVar[LogProbKind] = "exact"
    is_bijective: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "__abstractmethods__", None):
            PRIOR_CLASSES[cls.__name__] = cls

    def __init__(self, data_shape: tuple[int, ...], latent_dim: int) -> None:
        super().__init__()
        self.data_shape = as_shape(data_shape, "data_shape")
        self.latent_dim = check_int(latent_dim, "latent_dim", minimum=1)
        if self.latent_dim > self.data_dim:
            raise ValueError(
                f"latent_dim: expected at most prod(data_shape) = {self.data_dim}, got {self.latent_dim}"
            )

    @property
    def data_dim(self) -> int:
        """``n = prod(data_shape)``."""
        return math.prod(self.data_shape)

    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for a prior without parameters)."""
        return next((t.device for t in self.parameters()), torch.device("cpu"))

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the first parameter (float32 for a prior without parameters)."""
        return next((t.dtype for t in self.parameters()), torch.float32)

    def check_data(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Check that ``x`` is a finite batch of shape ``(B, *data_shape)``."""
        return check_finite(check_batch(x, self.data_shape, name), name)

    def check_latent(self, z: torch.Tensor, name: str = "z") -> torch.Tensor:
        """Check that ``z`` is a finite batch of shape ``(B, latent_dim)``."""
        return check_finite(check_batch(z, (self.latent_dim,), name), name)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Generator ``x = f(z)`` for a batch ``z`` of shape ``(B, latent_dim)``."""
        return self._decode(self.check_latent(z))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse on the range ``z = f^dagger(x)`` for a batch ``x`` of shape ``(B, *data_shape)``."""
        return self._encode(self.check_data(x))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Projection onto the range, ``f(f^dagger(x))``; identity for bijective priors."""
        if self.is_bijective:
            return self.check_data(x)
        return self._project(self.check_data(x))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of each image, shape ``(B,)``; exact, bound or estimate per ``log_prob_kind``."""
        return self._log_prob(self.check_data(x))

    def project_with_log_prob(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``v = P(x)`` and ``log p(v)`` together, from one inverse and one forward pass where possible.

        Equals ``(project(x), log_prob(project(x)))`` up to round-off (and, for TRUMPET, the
        Tikhonov term of its pseudo-inverse, since ``g^dagger(g(z')) = z'`` only up to it).
        """
        return self._project_with_log_prob(self.check_data(x))

    def project_with_latent_log_prob(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``v = P(x)`` and the log-density of ``v``'s latent coordinates under the prior's latent model.

        ``log p(v)`` on the range is this latent log-density minus the volume change of the map from
        the latent coordinates to images (``(1/2) log det J^T J``); this method leaves that term out.
        By default the coordinates are ``z = f^dagger(x)`` and the density is :meth:`latent_log_prob`;
        TRUMPET uses the input ``z' = g^dagger(x)`` of its injective part and the latent flow's
        density ``p_{Z'}(z')``. For a linear generator the volume term is a constant, so both densities
        have the same maximisers on the range.

        Example:
            >>> import torch
            >>> from invprob.priors import LinearGaussianPrior
            >>> prior = LinearGaussianPrior(torch.eye(4)[:, :2] * 2, data_shape=(1, 2, 2))
            >>> v, log_p = prior.project_with_latent_log_prob(torch.ones(1, 1, 2, 2))
            >>> v.flatten().tolist(), round(float(log_p), 4)
            ([1.0, 1.0, 0.0, 0.0], -2.0879)
        """
        return self._project_with_latent_log_prob(self.check_data(x))

    @property
    def is_initialized(self) -> bool:
        """False while a layer with data-dependent initialisation (ActNorm) has not seen data yet."""
        return layers_initialized(self)

    def mean_image(self) -> torch.Tensor:
        """``f(E[z])``: the image of the latent mean, shape ``(1, *data_shape)``; a point on the range.

        Drawn at temperature 0 from a private generator, so the global random state is untouched.
        """
        with torch.no_grad():
            return self._decode(self.sample_latent(1, 0.0, torch.Generator().manual_seed(0)))

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of each latent vector, shape ``(B,)``."""
        return self._latent_log_prob(self.check_latent(z))

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` images ``f(z)``, ``z`` from the latent density at the given temperature."""
        n = check_int(n, "n", minimum=1)
        return self._decode(self.sample_latent(n, check_temperature(temperature), generator))

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """``_decode(_encode(x))``; override when a cheaper path exists (e.g. a latent flow that cancels)."""
        return self._decode(self._encode(x))

    def _project_with_log_prob(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two-call default; override where the density can reuse the projection's latent."""
        v = x if self.is_bijective else self._project(x)
        return v, self._log_prob(v)

    def _project_with_latent_log_prob(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(z), log p_Z(z))`` with ``z = f^dagger(x)``; override where the latent model has another natural coordinate."""
        z = self._encode(x)
        return self._decode(z), self._latent_log_prob(z)

    @abstractmethod
    def _decode(self, z: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _encode(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _log_prob(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _latent_log_prob(self, z: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def sample_latent(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` latent vectors of shape ``(n, latent_dim)`` on the prior's device."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-serialisable) that rebuild this architecture."""

    def save(self, path: str | os.PathLike, **metadata: Any) -> None:
        """Save weights and config to the checkpoint directory ``path`` (atomic writes)."""
        from .io import save_prior

        save_prior(self, path, **metadata)


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float; raise ``ValueError`` unless it is a finite number >= 0 (not a bool)."""
    numeric = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not numeric or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: expected a finite number >= 0, got {temperature!r}")
    return float(temperature)


def randn(n: int, dim: int, generator: torch.Generator | None, like: Prior) -> torch.Tensor:
    """Standard normal ``(n, dim)`` drawn on the CPU from ``generator`` and moved to ``like``'s device.

    Drawing on the CPU keeps results identical across devices for a given generator seed.
    """
    return torch.randn((n, dim), generator=generator, dtype=like.dtype).to(like.device)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over all but the batch dimension."""
    flat = z.flatten(1)
    return -0.5 * (flat.pow(2).sum(1) + flat.shape[1] * LOG_2PI)
