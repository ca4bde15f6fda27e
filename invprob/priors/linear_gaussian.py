"""A linear-Gaussian "generator": the injective prior whose posteriors are known in closed form.

``x = W z + b`` with ``z ~ N(0, I_d)``, ``W`` an ``(n, d)`` matrix of full column rank. The
distribution of ``x`` is a Gaussian concentrated on the ``d``-dimensional affine subspace
``range(W) + b`` -- the simplest injective generative prior, and the one for which every MAP
estimate and every posterior of a linear inverse problem with Gaussian noise can be written down.
That makes it the reference problem for testing solvers and samplers:

- MAP / projected-gradient methods (Algorithm 1 of Kothari et al. 2021) must land on the exact
  posterior mode, which for a Gaussian is the posterior mean;
- samplers must reproduce the posterior mean and covariance of
  :meth:`LinearGaussianPrior.exact_posterior`.

References:
    Kothari, Khorashadizadeh, de Hoop, Dokmanić (2021), "Trumpets: Injective Flows for Inference
    and Inverse Problems" (UAI) — Algorithm 1, checked here against the closed form; the Gaussian
    posterior is the standard linear-Gaussian result (e.g. Bishop (2006), "Pattern Recognition
    and Machine Learning", sec. 2.3.3).

Example:
    >>> import torch
    >>> from invprob.operators import RandomGaussian
    >>> prior = LinearGaussianPrior(data_shape=(1, 4, 4), latent_dim=3)
    >>> op = RandomGaussian((1, 4, 4), 8, seed=0)
    >>> post = prior.exact_posterior(op, op(prior.sample(1, generator=torch.Generator().manual_seed(0))), 0.1)
    >>> post.mean.shape, post.latent_cov.shape
    (torch.Size([1, 1, 4, 4]), torch.Size([1, 3, 3]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import as_shape, check_finite, check_int, to_tensor
from ..operators.base import LinearOperator
from .base import Prior, randn, standard_normal_log_prob


class LinearGaussianPrior(Prior):
    """``x = W z + b``, ``z ~ N(0, I_d)``: a Gaussian prior supported on an affine ``d``-plane.

    ``W`` is an ``(n, d)`` tensor or array of full column rank (``d <= n``), ``b`` an offset of
    ``n`` entries (or of shape ``data_shape``; zero by default). ``data_shape`` defaults to ``(n,)``.

    - ``decode(z) = W z + b``;
    - ``encode(x) = W^+ (x - b)``, the least-squares latent (exact on the range);
    - ``project(x) = W W^+ (x - b) + b``, the orthogonal projection onto the affine range;
    - ``log_prob(x)``: the exact density with respect to the ``d``-dimensional volume measure on
      the range (the change of variables of eq. 2 of the TRUMPET paper for an injective map),
      ``-1/2 ||z||^2 - d/2 log(2 pi) - 1/2 log det(W^T W)`` at ``z = encode(x)``; for ``x`` off
      the range it is the density at the projection of ``x`` (the injective-flow convention).

    ``W`` and ``b`` are frozen ``nn.Parameter`` objects, so they are saved in the weights file,
    follow ``.to()`` and define the prior's device and dtype; call ``requires_grad_()`` to train
    them. Built from shapes alone (``LinearGaussianPrior(data_shape=..., latent_dim=...)``, as the
    checkpoint loader does), ``W`` embeds the first ``d`` coordinates and ``b = 0`` until weights
    are loaded. A float64 ``W`` keeps float64 (useful for exact tests).
    """

    log_prob_kind = "exact"

    def __init__(
        self,
        W: torch.Tensor | np.ndarray | None = None,
        b: torch.Tensor | np.ndarray | None = None,
        *,
        data_shape: tuple[int, ...] | None = None,
        latent_dim: int | None = None,
    ) -> None:
        weight = _weight(W, data_shape, latent_dim)
        n, d = weight.shape
        shape = (n,) if data_shape is None else as_shape(data_shape, "data_shape")
        if math.prod(shape) != n:
            raise ValueError(f"data_shape: {shape} has {math.prod(shape)} entries but W has {n} rows")
        if latent_dim is not None and check_int(latent_dim, "latent_dim", minimum=1) != d:
            raise ValueError(f"latent_dim: {latent_dim} does not match the {d} columns of W")
        super().__init__(shape, d)
        self.W = nn.Parameter(weight, requires_grad=False)
        self.b = nn.Parameter(_offset(b, n, weight.dtype), requires_grad=False)

    def config(self) -> dict[str, Any]:
        """Only the shapes: ``W`` and ``b`` travel in the weights file."""
        return {"data_shape": list(self.data_shape), "latent_dim": self.latent_dim}

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        x = z.to(self.W) @ self.W.T + self.b
        return x.reshape(z.shape[0], *self.data_shape)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        q, r = torch.linalg.qr(self.W)
        rhs = (x.flatten(1).to(self.W) - self.b) @ q
        return torch.linalg.solve_triangular(r, rhs.T, upper=True).T

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self._latent_log_prob(self._encode(x)) - 0.5 * self.log_det_gram()

    def _latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def sample_latent(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        return temperature * randn(n, self.latent_dim, generator, self)

    def log_det_gram(self) -> torch.Tensor:
        """``log det(W^T W)`` (from the R factor of a QR decomposition of ``W``)."""
        r = torch.linalg.qr(self.W, mode="r")[1]
        return 2.0 * torch.log(torch.diagonal(r).abs()).sum()

    def exact_posterior(
        self,
        op: LinearOperator,
        y: torch.Tensor | np.ndarray,
        sigma: float | torch.Tensor,
    ) -> GaussianPosterior:
        """Closed-form posterior of ``x = W z + b``, ``z ~ N(0, I)``, given ``y = A x + e``, ``e ~ N(0, sigma^2 I)``.

        With ``M = A W`` (an ``m x d`` matrix, built by applying ``op`` to the columns of ``W``)::

            Cov(z | y)  = (I_d + M^T M / sigma^2)^{-1}
            E[z | y]    = Cov(z | y) M^T (y - A b) / sigma^2
            E[x | y]    = W E[z | y] + b,     Cov(x | y) = W Cov(z | y) W^T.

        ``y`` has shape ``(B, *op.out_shape)`` or ``op.out_shape``; ``sigma`` is a positive number or
        one per batch element. Computed in float64; returned batched, on the prior's device and dtype.
        """
        if not isinstance(op, LinearOperator):
            raise TypeError(f"op: expected a LinearOperator, got {type(op).__name__}")
        if tuple(op.in_shape) != tuple(self.data_shape):
            raise ValueError(f"op: in_shape {op.in_shape} does not match the prior's data_shape {self.data_shape}")
        y64 = _batched_measurement(y, op)
        batch = y64.shape[0]
        noise_var = _noise_variance(sigma, batch)
        W = self.W.detach().double().cpu()
        b = self.b.detach().double().cpu()
        M = _apply(op, W.T).T
        residual = y64.flatten(1) - _apply(op, b.unsqueeze(0))
        precision = torch.eye(self.latent_dim, dtype=torch.float64) + (M.T @ M) / noise_var.view(-1, 1, 1)
        latent_cov = torch.linalg.inv(precision)
        latent_cov = 0.5 * (latent_cov + latent_cov.transpose(1, 2))
        rhs = (residual @ M) / noise_var.view(-1, 1)
        latent_mean = (latent_cov @ rhs.unsqueeze(-1)).squeeze(-1)
        mean = latent_mean @ W.T + b
        cov = W @ latent_cov @ W.T
        like = {"dtype": self.dtype, "device": self.device}
        return GaussianPosterior(
            latent_mean=latent_mean.to(**like),
            latent_cov=latent_cov.to(**like),
            mean=mean.reshape(batch, *self.data_shape).to(**like),
            cov=cov.to(**like),
        )

    def covariance(self) -> torch.Tensor:
        """Prior covariance ``W W^T`` of ``vec(x)``, shape ``(n, n)`` (rank ``d``)."""
        return self.W @ self.W.T


def _weight(W: torch.Tensor | np.ndarray | None, data_shape: tuple[int, ...] | None, latent_dim: int | None) -> torch.Tensor:
    if W is None:
        if data_shape is None or latent_dim is None:
            raise ValueError("LinearGaussianPrior: give W, or both data_shape and latent_dim")
        n = math.prod(as_shape(data_shape, "data_shape"))
        d = check_int(latent_dim, "latent_dim", minimum=1)
        if d > n:
            raise ValueError(f"latent_dim: expected at most prod(data_shape) = {n}, got {d}")
        return torch.eye(n, d)
    weight = check_finite(to_tensor(W, "W"), "W").detach().clone()
    if weight.dim() != 2:
        raise ValueError(f"W: expected a matrix of shape (n, d), got shape {tuple(weight.shape)}")
    n, d = weight.shape
    if d > n:
        raise ValueError(f"W: a {n}x{d} matrix cannot be injective (needs d <= n)")
    rank = int(torch.linalg.matrix_rank(weight.double()))
    if rank < d:
        raise ValueError(f"W: expected full column rank {d} (an injective map), got rank {rank}")
    return weight


def _offset(b: torch.Tensor | np.ndarray | None, n: int, dtype: torch.dtype) -> torch.Tensor:
    if b is None:
        return torch.zeros(n, dtype=dtype)
    offset = check_finite(to_tensor(b, "b"), "b").detach().clone().to(dtype)
    if offset.numel() != n:
        raise ValueError(f"b: expected {n} entries (one per row of W), got shape {tuple(offset.shape)}")
    return offset.flatten()


@dataclass
class GaussianPosterior:
    """The posterior of a :class:`LinearGaussianPrior` given ``y = A x + N(0, sigma^2 I)``.

    Per batch element ``b``: ``latent_mean`` ``(B, d)`` and ``latent_cov`` ``(B, d, d)`` describe
    ``z | y``; ``mean`` ``(B, *data_shape)`` and ``cov`` ``(B, n, n)`` (rank ``d``) describe
    ``x | y = W z + b``. Since the posterior is Gaussian, its mean is also its mode (the MAP).
    """

    latent_mean: torch.Tensor
    latent_cov: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        """Pixel-wise posterior standard deviation, shape ``(B, *data_shape)``."""
        var = torch.diagonal(self.cov, dim1=-2, dim2=-1).clamp_min(0)
        return var.sqrt().reshape(self.mean.shape)


def _batched_measurement(y: torch.Tensor | np.ndarray, op: LinearOperator) -> torch.Tensor:
    t = check_finite(to_tensor(y, "y"), "y").detach().double().cpu()
    if tuple(t.shape) == tuple(op.out_shape):
        t = t.unsqueeze(0)
    if tuple(t.shape[1:]) != tuple(op.out_shape):
        raise ValueError(f"y: expected shape {op.out_shape} or (B, *{op.out_shape}), got {tuple(t.shape)}")
    return t


def _noise_variance(sigma: float | torch.Tensor, batch: int) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu().flatten()
    if s.numel() == 1:
        s = s.expand(batch)
    if s.numel() != batch or not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError(f"sigma: expected a positive number or {batch} positive numbers, got {sigma!r}")
    return s.pow(2)


def _apply(op: LinearOperator, rows: torch.Tensor) -> torch.Tensor:
    """Apply ``op`` (on its own device, in float64) to each row of ``rows`` ``(k, n)``; return ``(k, m)`` on the CPU."""
    device = next((t.device for t in list(op.buffers()) + list(op.parameters())), torch.device("cpu"))
    images = rows.to(device).reshape(rows.shape[0], *op.in_shape)
    return op(images).flatten(1).double().cpu()
