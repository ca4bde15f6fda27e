"""The prior's off-range error as a Gaussian residual: posterior samples of ``x = v + r``.

A prior supported on a manifold (an injective flow such as TRUMPET) gives no probability to the
part of an image off its range, so its posterior samples ``v`` cannot spread where the truth
leaves the range, and their credible intervals are too narrow there. The Bayesian approximation
error approach treats such a modelling error as a Gaussian variable whose statistics come from
training data. Here the model is

    x = v + r,    v on the prior's range,    r ~ N(mu, V),  V = diag(var),

with ``mu`` and ``var`` the pixel-wise mean and variance of the training residuals
``x_i - P(x_i)`` (``P`` the prior's projection; :meth:`GaussianResidual.fit`). Given a range
sample ``v`` and a measurement ``y = A x + e``, ``e ~ N(0, s^2 I)``, the residual is Gaussian:

    E[r | v, y] = mu + V A^T K^{-1} (y - A v - A mu),    K = A V A^T + s^2 I,

and a draw of it is a prior draw corrected by the same gain (Matheron's rule):

    r = r0 + V A^T K^{-1} (y - A v - A r0 - e0),    r0 ~ N(mu, V),  e0 ~ N(0, s^2 I).

``K^{-1}`` is applied by conjugate gradients in float64 (``K`` is symmetric positive definite; one
``A`` and one ``A^T`` per iteration, every sample of the batch at once). The components of ``r``
that ``A`` does not see (in limited-angle CT, the frequencies of the missing wedge) keep their
training spread; those it measures are pinned down by the data. Under the same model,
``d = y - A v - A mu ~ N(0, K)``, so ``d^T K^{-1} d`` is a chi-square variable with ``m`` degrees
of freedom: :meth:`GaussianResidual.misfit`, the data-misfit test that does not count the
off-range error the model expects. No gradients are taken through any of this.

The off-range error of a manifold prior concentrates where the image has edges (its range
smooths them), so a spread shared by all pixels is too wide on flat regions and too narrow on
edges. :class:`EdgeAdaptiveResidual` lets the moments depend on the range image itself:

    r_j | v ~ N(m_k, s_k^2),    k = bin of the edge strength |grad v|_j,

``m_k`` and ``s_k^2`` the mean and variance of the training residuals whose projections ``P(x_i)``
have an edge strength in bin ``k`` (bins: quantiles of the training edge strengths). Given ``v``
the model is again Gaussian with a diagonal ``V(v)``, so every formula above holds with ``V(v)``,
per sample.

The approximation: the range samples ``v`` come from the sampler's posterior with the plain
likelihood ``N(y; A v, s^2 I)``, not with the marginal ``N(y; A v + A mu, K)`` of the joint
model, so ``y`` informs ``v`` and then ``r`` as if they were independent pieces of evidence. The
added spread is the off-range spread of the training images, not that of the image being
measured; a training set unlike the measured images gives statistics that do not describe them.

References:
    Kaipio, Somersalo 2007, "Statistical inverse problems: discretization, model reduction and
    inverse crimes" (Journal of Computational and Applied Mathematics) (the approximation error
    approach); Hoffman, Ribak 1991, "Constrained realizations of Gaussian
    fields: a simple algorithm" (Astrophysical Journal Letters) (Matheron's rule); Hestenes,
    Stiefel 1952, "Methods of conjugate gradients for solving linear systems".

Example:
    >>> from invprob.operators import RandomMask
    >>> from invprob.priors import LinearGaussianPrior
    >>> g = torch.Generator().manual_seed(0)
    >>> prior = LinearGaussianPrior(torch.randn(16, 2, generator=g), data_shape=(1, 4, 4))
    >>> residual = GaussianResidual.fit(prior, torch.randn(50, 1, 4, 4, generator=g))
    >>> op = RandomMask((1, 4, 4), 0.5, seed=0)
    >>> v = prior.sample(8, generator=g)
    >>> x = residual.condition_samples(op, v, op(v[:1])[0], 0.1, generator=g)
    >>> x.shape
    torch.Size([8, 1, 4, 4])
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._checks import check_finite, check_float, check_int
from ..operators.base import LinearOperator
from ..priors.base import Prior
from .reach import Misfit, chi2_sf

DEFAULT_TOL = 1e-5
DEFAULT_MAX_ITER = 1000


@dataclass(frozen=True)
class GaussianResidual:
    """Pixel-wise Gaussian model ``r ~ N(mean, diag(var))`` of the part of an image off the prior's range.

    ``mean`` and ``var`` have the image shape; ``n_images`` is the size of the training set
    they were estimated from. See the module docstring for the model and the conditioning.
    """

    mean: torch.Tensor
    var: torch.Tensor
    n_images: int

    def __post_init__(self) -> None:
        if self.mean.shape != self.var.shape:
            raise ValueError(f"var: expected the shape of mean {tuple(self.mean.shape)}, got {tuple(self.var.shape)}")
        if not bool(torch.isfinite(self.var).all()) or bool((self.var < 0).any()):
            raise ValueError("var: expected finite variances >= 0")

    @classmethod
    def fit(cls, prior: Prior, images: torch.Tensor, *, batch_size: int = 32) -> GaussianResidual:
        """Mean and variance, pixel by pixel, of ``x_i - P(x_i)`` over ``n >= 2`` training ``images`` ``(n, *shape)``.

        ``P`` is ``prior.project``; ``batch_size`` images are projected at a time.
        """
        residuals, _ = _projection_residuals(prior, images, batch_size)
        return cls(residuals.mean(0), residuals.var(0), int(images.shape[0]))

    @property
    def rms(self) -> float:
        """Root mean square of the residual, ``sqrt(mean_j (mu_j^2 + var_j))``, in image units."""
        return float((self.mean.double().pow(2) + self.var.double()).mean().sqrt())

    def digest(self) -> str:
        """A short hash of ``mean``, ``var`` and ``n_images``: equal for equal models (to key stored results)."""
        h = hashlib.sha256(str(self.n_images).encode())
        for t in (self.mean, self.var):
            h.update(t.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @torch.no_grad()
    def condition_mean(self, op: LinearOperator, x: torch.Tensor, y: torch.Tensor, sigma: float, *,
                       tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER) -> torch.Tensor:
        """``x + E[r | x, y]`` for range estimates ``x`` ``(B, *shape)`` of one measurement ``y`` ``op.out_shape``."""
        mean, var = self._check(op, x, y, sigma)
        misfit = y.unsqueeze(0) - op(x + mean)
        return x + mean + self._gain(op, var, misfit, sigma, tol, max_iter)

    @torch.no_grad()
    def condition_samples(self, op: LinearOperator, samples: torch.Tensor, y: torch.Tensor, sigma: float, *,
                          generator: torch.Generator | None = None, tol: float = DEFAULT_TOL,
                          max_iter: int = DEFAULT_MAX_ITER) -> torch.Tensor:
        """Samples ``v_s + r_s`` of ``x`` given range samples ``v_s`` ``(S, *shape)`` of one measurement ``y``.

        ``r_s`` is drawn from ``p(r | v_s, y)`` by Matheron's rule; ``sigma`` is the noise std of ``y``.
        """
        mean, var = self._check(op, samples, y, sigma)
        r0 = mean + var.sqrt() * _randn(samples.shape, generator, samples)
        e0 = sigma * _randn((samples.shape[0], *y.shape), generator, samples)
        misfit = y.unsqueeze(0) - op(samples + r0) - e0
        return samples + r0 + self._gain(op, var, misfit, sigma, tol, max_iter)

    @torch.no_grad()
    def misfit(self, op: LinearOperator, x: torch.Tensor, y: torch.Tensor, sigma: float, *,
               tol: float = DEFAULT_TOL, max_iter: int = DEFAULT_MAX_ITER) -> Misfit:
        """The chi-square misfit of a range estimate ``x`` (an image, no batch axis) under this model.

        If ``y = A (x + r) + e`` with ``r ~ N(mu, V)`` and ``e ~ N(0, s^2 I)``, then
        ``d = y - A x - A mu ~ N(0, K)`` and ``T = d^T K^{-1} d`` is a ``chi^2_m`` variable
        (:class:`invprob.uq.Misfit`; :func:`invprob.uq.reach_check` takes it). Unlike the plain
        ``||y - A x||^2 / s^2`` it does not count the off-range error the model expects as misfit.
        """
        mean, var = self._check(op, x.unsqueeze(0), y, sigma)
        d = (y.unsqueeze(0) - op(x.unsqueeze(0) + mean)).double()
        w = self._solve(op, var, d, sigma, tol, max_iter)
        statistic, dof = float((d * w).sum()), int(d.numel())
        return Misfit(statistic, dof, statistic / dof, chi2_sf(statistic, dof))

    def _check(self, op: LinearOperator, x: torch.Tensor, y: torch.Tensor,
               sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(f"x: expected images of shape {tuple(self.mean.shape)} after the batch axis, "
                             f"got {tuple(x.shape)}")
        if tuple(y.shape) != tuple(op.out_shape):
            raise ValueError(f"y: expected one measurement of shape {tuple(op.out_shape)} (no batch axis), "
                             f"got {tuple(y.shape)}")
        check_float(sigma, "sigma", minimum=0, strict=True)
        return self.moments(x)

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of ``r`` given range images ``x`` ``(B, *shape)``, broadcastable to ``x``:
        here the pixel-wise ``mean`` and ``var``, the same for every image."""
        return self.mean.to(x), self.var.to(x)

    @staticmethod
    def _gain(op: LinearOperator, var: torch.Tensor, misfit: torch.Tensor, sigma: float, tol: float,
              max_iter: int) -> torch.Tensor:
        """``V A^T K^{-1} misfit``, computed in float64 (``K``'s condition number can reach
        ``1 + ||A||^2 max(var) / sigma^2``) and returned in ``misfit``'s dtype."""
        solved = GaussianResidual._solve(op, var, misfit.double(), sigma, tol, max_iter)
        return (var.double() * op.adjoint(solved)).to(misfit.dtype)

    @staticmethod
    def _solve(op: LinearOperator, var: torch.Tensor, b: torch.Tensor, sigma: float, tol: float,
               max_iter: int) -> torch.Tensor:
        """``K^{-1} b`` for a float64 ``b``, ``K = A V A^T + sigma^2 I`` with ``V = diag(var)``."""
        var = var.to(device=b.device, dtype=torch.float64)
        return solve_spd(lambda w: op(var * op.adjoint(w)) + sigma**2 * w, b, tol=tol, max_iter=max_iter)


def _projection_residuals(prior: Prior, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_i - P(x_i), P(x_i))`` of ``n >= 2`` training ``images``, ``batch_size`` projected at a time."""
    if not isinstance(images, torch.Tensor) or images.dim() < 2:
        raise TypeError(f"images: expected a tensor (n, *shape), got {type(images).__name__}")
    if images.shape[0] < 2:
        raise ValueError(f"images: expected at least 2 training images to estimate a variance, got {images.shape[0]}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    x = images.to(device=prior.device, dtype=prior.dtype)
    with torch.no_grad():
        projections = torch.cat([prior.project(b) for b in x.split(batch_size)])
    return x - projections, projections


def edge_strength(x: torch.Tensor) -> torch.Tensor:
    """``|grad x|`` per pixel of images ``(B, C, H, W)``: the length of the forward differences along
    both axes (zero beyond the last row and column)."""
    dx = torch.nn.functional.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    dy = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return (dx.pow(2) + dy.pow(2)).sqrt()


@dataclass(frozen=True)
class EdgeAdaptiveResidual(GaussianResidual):
    """Gaussian off-range residual whose pixel moments depend on the edge strength of the range image.

    ``r_j | v ~ N(bin_mean[k], bin_var[k])`` with ``k`` the bin of :func:`edge_strength` ``(v)_j``
    among ``edges`` (``len(bin_mean) + 1`` increasing values; strengths outside them fall in the end
    bins). ``mean`` and ``var`` stay the pixel-wise moments, as in :class:`GaussianResidual` (for
    :attr:`rms`). See the module docstring for the model.

    Example:
        >>> from invprob.operators import RandomMask
        >>> from invprob.priors import LinearGaussianPrior
        >>> g = torch.Generator().manual_seed(0)
        >>> prior = LinearGaussianPrior(torch.randn(64, 3, generator=g), data_shape=(1, 8, 8))
        >>> residual = EdgeAdaptiveResidual.fit(prior, torch.randn(40, 1, 8, 8, generator=g), bins=4)
        >>> v = prior.sample(2, generator=g)
        >>> mean, var = residual.moments(v)
        >>> tuple(var.shape), bool((var > 0).all())
        ((2, 1, 8, 8), True)
    """

    edges: torch.Tensor
    bin_mean: torch.Tensor
    bin_var: torch.Tensor

    def __post_init__(self) -> None:
        super().__post_init__()
        bins = self.bin_mean.numel()
        if self.edges.dim() != 1 or self.edges.numel() != bins + 1 or self.bin_var.shape != self.bin_mean.shape:
            raise ValueError(f"edges, bin_mean, bin_var: expected {bins + 1} edges and {bins} means and variances, got "
                             f"{tuple(self.edges.shape)}, {tuple(self.bin_mean.shape)}, {tuple(self.bin_var.shape)}")
        if bool((self.edges[1:] < self.edges[:-1]).any()):
            raise ValueError("edges: expected non-decreasing bin edges")
        if not bool(torch.isfinite(self.bin_var).all()) or bool((self.bin_var < 0).any()):
            raise ValueError("bin_var: expected finite variances >= 0")

    @classmethod
    def fit(cls, prior: Prior, images: torch.Tensor, *, batch_size: int = 32, bins: int = 20) -> EdgeAdaptiveResidual:
        """Pixel-wise and per-bin moments of ``x_i - P(x_i)`` over ``n >= 2`` training ``images``.

        The bins lie between the ``bins + 1`` quantiles of the edge strengths of the projections
        ``P(x_i)`` (fewer where quantiles coincide); each bin's mean and variance are those of the
        residual pixels whose projection falls in it.
        """
        bins = check_int(bins, "bins", minimum=1)
        pixel_residuals, projections = _projection_residuals(prior, images, batch_size)
        residuals, strength = pixel_residuals.flatten(), edge_strength(projections).flatten()
        edges = torch.quantile(strength.double(), torch.linspace(0, 1, bins + 1, dtype=torch.float64)).unique()
        if edges.numel() < 2:
            raise ValueError("images: every projection has the same edge strength; fit a GaussianResidual instead")
        edges, bins = edges.to(strength), edges.numel() - 1
        index = _bin(strength, edges)
        counts = torch.bincount(index, minlength=bins)
        if bool((counts < 2).any()):
            raise ValueError(f"bins: {bins} bins leave some with fewer than 2 residual pixels; use fewer bins or more images")
        total = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, residuals.double())
        bin_mean = total / counts
        squares = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, (residuals.double() - bin_mean[index]) ** 2)
        bin_var = squares / (counts - 1)
        return cls(pixel_residuals.mean(0), pixel_residuals.var(0), int(images.shape[0]), edges,
                   bin_mean.to(strength), bin_var.to(strength))

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel mean and variance of ``r`` given range images ``x`` ``(B, *shape)``, of ``x``'s shape."""
        index = _bin(edge_strength(x), self.edges.to(x))
        return self.bin_mean.to(x)[index], self.bin_var.to(x)[index]

    def digest(self) -> str:
        """A short hash of every field: equal for equal models."""
        h = hashlib.sha256(super().digest().encode())
        for t in (self.edges, self.bin_mean, self.bin_var):
            h.update(t.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def _bin(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Index ``k`` with ``edges[k] <= value < edges[k + 1]``, values outside the edges in the end bins."""
    return torch.bucketize(values, edges[1:-1], right=True)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


def solve_spd(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *, tol: float = DEFAULT_TOL,
              max_iter: int = DEFAULT_MAX_ITER) -> torch.Tensor:
    """``K^{-1} b`` for a symmetric positive definite ``K`` (``apply(w) = K w``), by conjugate gradients.

    Batched along axis 0 of ``b``: each right-hand side stops when its residual is below
    ``tol * ||b||`` and is frozen from then on. Warns (``RuntimeWarning``) when some have not
    converged after ``max_iter`` iterations; raises ``ValueError`` for a non-finite ``b`` or when
    ``p^T K p <= 0`` shows that ``K`` is not positive definite.

    Example:
        >>> diag = torch.tensor([[1.0, 2.0, 4.0]])
        >>> [round(v, 5) for v in solve_spd(lambda w: diag * w, torch.tensor([[1.0, 2.0, 4.0]]))[0].tolist()]
        [1.0, 1.0, 1.0]
    """
    check_float(tol, "tol", minimum=0, strict=True)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    check_finite(b, "b")
    shape = (-1,) + (1,) * (b.dim() - 1)

    def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u * v).flatten(1).sum(1)

    w = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = dot(r, r)
    threshold = tol**2 * rr
    for _ in range(max_iter):
        active = rr > threshold
        if not bool(active.any()):
            return w
        q = apply(p)
        pq = dot(p, q)
        if bool((active & ~(pq > 0)).any()):  # also catches NaN
            raise ValueError("apply: conjugate gradients broke down (p^T K p <= 0 or not finite): K is not "
                             "symmetric positive definite")
        alpha = torch.where(active, rr / pq.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rr))
        w = w + alpha.view(shape) * p
        r = r - alpha.view(shape) * q
        rr_new = dot(r, r)
        p = torch.where(active.view(shape), r + (rr_new / rr.clamp_min(torch.finfo(b.dtype).tiny)).view(shape) * p, p)
        rr = torch.where(active, rr_new, rr)
    if bool((rr > threshold).any()):
        warnings.warn(f"solve_spd: conjugate gradients did not reach the relative residual {tol:g} in "
                      f"{max_iter} iterations; the result is approximate", RuntimeWarning, stacklevel=2)
    return w
