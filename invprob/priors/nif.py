"""The Gaussian noisy injective layer of noisy injective flows (NIF), with its closed forms.

The layer maps a latent ``z in R^M`` to ``x in R^N`` (``M <= N``) through an affine injective map
plus diagonal Gaussian noise,

    p(x | z) = N(x; A z + b, Sigma),    Sigma = diag(sigma^2),

and inverts it with the *stochastic inverse* (Cunningham et al. 2020, sec. 3.3, eq. 6 and 9), the likelihood
normalised over ``z``:

    q(z | x) = N(z; Lambda^{-1} u, Lambda^{-1}),   Lambda = A^T Sigma^{-1} A,
    u = A^T Sigma^{-1} (x - b).

Everything is computed from the thin QR factorisation of the whitened matrix
``W = Sigma^{-1/2} A = Q R``, so ``Lambda = R^T R`` is never formed or inverted:

- the mode ``z+ = Lambda^{-1} u = R^{-1} Q^T Sigma^{-1/2} (x - b)`` (eq. 42) is the weighted
  least-squares solution ``argmin_z ||x - b - A z||^2_{Sigma^{-1}}`` (app. A.3);
- ``log|Lambda| = 2 sum_i log|R_ii|``;
- ``mu^T Sigma^{-1} mu - u^T Lambda^{-1} u = ||(I - Q Q^T) Sigma^{-1/2} mu||^2`` is the whitened
  distance from ``x`` to the affine manifold ``{A z + b}``.

A test-time scale ``s`` replaces ``Sigma`` by ``s Sigma`` when sampling (paper sec. 5.2): ``s = 1``
is the trained model, ``s = 0`` puts samples exactly on the manifold.

:class:`NIF` is the deep noisy injective flow of the paper's fig. 11: a bijective latent flow
``w -> z`` on ``R^M``, the Gaussian layer ``z -> x'`` (``R^M -> R^N``) and a bijective image flow
``x' -> x``. Its flow layers are those of :mod:`invprob.priors.layers`.

References:
    Cunningham, Zabounidis, Agrawal, Fiterau, Sheldon (2020), "Normalizing Flows Across
    Dimensions" (the noisy injective flow, its stochastic inverse and the lower bound of eq. 7).

Example:
    >>> import torch
    >>> layer = GaussianNIFLayer(2, 5)
    >>> layer(torch.zeros(3, 2)).shape
    torch.Size([3, 5])
    >>> prior = NIF((1, 8, 8), 4, n_scales=1, hidden=4)
    >>> x = prior.sample(2, generator=torch.Generator().manual_seed(0))
    >>> x.shape, prior.encode(x).shape
    (torch.Size([2, 1, 8, 8]), torch.Size([2, 4]))
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import as_image_shape, check_int
from .base import LOG_2PI, Prior, check_temperature, randn, standard_normal_log_prob
from .layers import ActNorm, FlowSequence, RevNetStep, Upsqueeze, latent_flow_layers


def check_scale(s: float, name: str = "s") -> float:
    """Return the noise scale ``s`` as a float, raising for negative or non-finite values."""
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {s!r}")
    return float(s)


class GaussianNIFLayer(nn.Module):
    """``p(x|z) = N(A z + b, diag(sigma^2))`` from ``R^M`` to ``R^N`` with its stochastic inverse.

    Args:
        in_dim: ``M``, the latent dimension.
        out_dim: ``N >= M``, the data dimension (vectors; reshape images before and after).
        init_std: initial noise standard deviation ``sigma``.
        min_std: floor on ``sigma`` (``sigma = min_std + softplus(raw)``), which keeps the
            likelihood bounded when data lie exactly on a manifold.

    ``A`` starts with orthonormal columns, so the layer starts as an isometric embedding.
    """

    def __init__(self, in_dim: int, out_dim: int, init_std: float = 0.1, min_std: float = 1e-3) -> None:
        super().__init__()
        self.in_dim = check_int(in_dim, "in_dim", minimum=1)
        self.out_dim = check_int(out_dim, "out_dim", minimum=1)
        if self.in_dim > self.out_dim:
            raise ValueError(f"in_dim: expected at most out_dim = {self.out_dim}, got {self.in_dim}")
        if not 0 <= min_std < init_std:
            raise ValueError(f"min_std, init_std: expected 0 <= min_std < init_std, got {min_std}, {init_std}")
        self.min_std = float(min_std)
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(self.out_dim, self.in_dim))[0])
        self.bias = nn.Parameter(torch.zeros(self.out_dim))
        raw = math.log(math.expm1(init_std - min_std))
        self.raw_std = nn.Parameter(torch.full((self.out_dim,), raw))

    @property
    def std(self) -> torch.Tensor:
        """Noise standard deviations ``sigma`` of shape ``(N,)``."""
        return self.min_std + F.softplus(self.raw_std)

    def _whitened_qr(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Thin QR factors of ``W = Sigma^{-1/2} A``: ``Q (N, M)``, ``R (M, M)``."""
        return torch.linalg.qr(self.weight / self.std[:, None])

    def _whiten(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.bias) / self.std

    def forward(self, z: torch.Tensor, s: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``x ~ N(A z + b, s Sigma)``; ``s = 0`` returns the manifold point ``A z + b``."""
        mean = z @ self.weight.T + self.bias
        if check_scale(s) == 0:
            return mean
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return mean + math.sqrt(s) * self.std * noise

    def _mode(self, x: torch.Tensor, q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve_triangular(r, (self._whiten(x) @ q).T, upper=True).T

    def inverse_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mode of the stochastic inverse, ``z+ = Lambda^{-1} u`` (eq. 42), shape ``(B, M)``."""
        return self._mode(x, *self._whitened_qr())

    def inverse_sample(
        self, x: torch.Tensor, n: int, generator: torch.Generator | None = None, s: float = 1.0
    ) -> torch.Tensor:
        """``n`` draws per row of ``x`` from ``q(z|x) = N(Lambda^{-1} u, s Lambda^{-1})``: ``(n, B, M)``.

        Reparametrised (``z = z+ + sqrt(s) R^{-1} eps``), so gradients reach the layer's weights.
        """
        n = check_int(n, "n", minimum=1)
        eps = torch.randn((n, x.shape[0], self.in_dim), generator=generator, dtype=x.dtype).to(x.device)
        return self.inverse_sample_from_noise(x, eps, s)

    def inverse_sample_from_noise(self, x: torch.Tensor, eps: torch.Tensor, s: float = 1.0) -> torch.Tensor:
        """Map standard-normal ``eps (n, B, M)`` to draws of ``q(z|x)`` (with scale ``s``)."""
        q, r = self._whitened_qr()
        mean = self._mode(x, q, r)
        spread = torch.linalg.solve_triangular(r, eps.reshape(-1, self.in_dim).T, upper=True).T
        return mean + math.sqrt(check_scale(s)) * spread.reshape(eps.shape)

    def inverse_log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log q(z|x)`` for ``z`` of shape ``(..., B, M)`` and ``x`` of shape ``(B, N)``."""
        q, r = self._whitened_qr()
        dev = (z - self._mode(x, q, r)) @ r.T
        logdet = 2 * torch.diagonal(r).abs().log().sum()
        return -0.5 * (dev.pow(2).sum(-1) - logdet + self.in_dim * LOG_2PI)

    def conditional_log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x|z) = log N(x; A z + b, Sigma)`` for ``z`` of shape ``(..., B, M)``."""
        resid = (x - z @ self.weight.T - self.bias) / self.std
        return -0.5 * (resid.pow(2).sum(-1) + 2 * self.std.log().sum() + self.out_dim * LOG_2PI)

    def manifold_term(self, x: torch.Tensor) -> torch.Tensor:
        """``log int p(x|z) dz = log Z_z - log Z_x`` (eq. 9), shape ``(B,)``.

        Equal to ``-1/2 [ ||(I - QQ^T) Sigma^{-1/2}(x-b)||^2 + log|Lambda| + log|Sigma|
        + (N - M) log 2 pi ]``: a Gaussian penalty on the distance from ``x`` to the manifold plus
        the volume change of the embedding.
        """
        q, r = self._whitened_qr()
        w = self._whiten(x)
        resid = w - (w @ q) @ q.T
        logdet_lam = 2 * torch.diagonal(r).abs().log().sum()
        logdet_sigma = 2 * self.std.log().sum()
        return -0.5 * (resid.pow(2).sum(-1) + logdet_lam + logdet_sigma + (self.out_dim - self.in_dim) * LOG_2PI)

    def marginal_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x) = log int N(z; 0, I) p(x|z) dz`` (eq. 41, app. A.8-A.9), shape ``(B,)``.

        ``log p(x) = 1/2 u^T (I + Lambda)^{-1} u - 1/2 log|I + Lambda| - log Z_x``: the paper's
        ``log Z^_z`` minus the standard-normal normaliser ``M/2 log 2 pi``, which cancels the
        ``dim(z) log 2 pi`` inside ``log Z^_z``. Equivalently ``x ~ N(b, A A^T + Sigma)``.
        """
        _, r = self._whitened_qr()
        w = self._whiten(x)
        u = w @ (self.weight / self.std[:, None])
        chol = torch.linalg.cholesky(torch.eye(self.in_dim, dtype=r.dtype, device=r.device) + r.T @ r)
        v = torch.linalg.solve_triangular(chol, u.T, upper=False).T
        logdet = 2 * torch.diagonal(chol).log().sum()
        log_zx = 0.5 * (w.pow(2).sum(-1) + 2 * self.std.log().sum() + self.out_dim * LOG_2PI)
        return 0.5 * (v.pow(2).sum(-1) - logdet) - log_zx


class NIF(Prior):
    """Deep noisy injective flow prior (Cunningham et al. 2020, sec. 3-4 and fig. 11).

    Generative process, with ``w ~ N(0, T^2 I_M)`` the prior's latent variable:

        z = g(w)                   bijective latent flow on R^M (revnet steps on (M, 1, 1))
        x' ~ N(A z + b, s Sigma)   Gaussian NIF layer R^M -> R^N, reshaped to the coarse grid
        x = F(x')                  bijective image flow (revnet steps and upsqueezes)

    ``decode(w) = F(A g(w) + b)`` is the on-manifold generator (``s = 0``); ``encode(x) =
    g^{-1}(z+(F^{-1}(x)))`` pushes the mode of the stochastic inverse (eq. 42) through the flows,
    so ``encode(decode(w)) = w``; ``project`` skips the latent flow, which cancels.

    ``log_prob(x)`` is the evidence lower bound of eq. 7 plus the image flow's change of variables,

        log p(x) >= E_{q(z|x')}[log p_z(z)] + log int p(x'|z) dz - log|det J_F(x')|,

    with the manifold term in closed form (eq. 9) and the expectation over ``n_bound_samples``
    reparametrised draws of ``q(z|x')`` taken with fixed noise (common random numbers), so the
    value is a deterministic, differentiable function of ``x`` (``log_prob_kind = "bound"``).
    ``log_prob(x, n_samples=K)`` instead returns the importance-sampled estimate with ``q`` as the
    proposal; since ``p(x'|z) / q(z|x') = int p(x'|z') dz'``, it reads
    ``manifold term + log mean_k p_z(z_k) - log|det J_F(x')|``, whose expectation lower-bounds
    ``log p(x)`` and tightens as ``K`` grows (16-32 draws are typical).

    Args:
        data_shape: ``(C, H, W)`` with ``H, W`` divisible by ``2 ** n_scales``.
        latent_dim: ``M``.
        n_scales: upsqueezes in the image flow; ``x'`` lives on ``(C 4^S, H / 2^S, W / 2^S)``.
        n_steps: bijective revnet steps at each squeezed resolution of the image flow (before
            each upsqueeze); a final actnorm acts at the image resolution.
        hidden, unet_depth: width and depth of the image-flow coupling U-Nets.
        n_latent_steps, latent_hidden: revnet steps and conditioner width of the latent flow.
        init_std, min_std: initial value and floor of the noise standard deviations of the layer.
        n_bound_samples: draws of ``q(z|x')`` used by the bound in :meth:`log_prob`.
    """

    log_prob_kind = "bound"
    is_bijective = False

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        latent_dim: int,
        *,
        n_scales: int = 2,
        n_steps: int = 2,
        hidden: int = 32,
        unet_depth: int = 1,
        n_latent_steps: int = 4,
        latent_hidden: int = 64,
        init_std: float = 1.0,
        min_std: float = 1e-3,
        n_bound_samples: int = 8,
    ) -> None:
        super().__init__(as_image_shape(data_shape, "data_shape"), latent_dim)
        self._config = {
            "data_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            "n_scales": check_int(n_scales, "n_scales", minimum=0),
            "n_steps": check_int(n_steps, "n_steps", minimum=0),
            "hidden": check_int(hidden, "hidden", minimum=1),
            "unet_depth": check_int(unet_depth, "unet_depth", minimum=0),
            "n_latent_steps": check_int(n_latent_steps, "n_latent_steps", minimum=0),
            "latent_hidden": check_int(latent_hidden, "latent_hidden", minimum=1),
            "init_std": float(init_std),
            "min_std": float(min_std),
            "n_bound_samples": check_int(n_bound_samples, "n_bound_samples", minimum=1),
        }
        c, h, w = self.data_shape
        factor = 2**n_scales
        if h % factor or w % factor:
            raise ValueError(f"n_scales: {n_scales} upsqueezes need H and W divisible by {factor}, got {self.data_shape}")
        self.coarse_shape = (c * factor**2, h // factor, w // factor)
        self.latent_flow = FlowSequence(latent_flow_layers(self.latent_dim, n_latent_steps, latent_hidden))
        self.layer = GaussianNIFLayer(self.latent_dim, self.data_dim, init_std=init_std, min_std=min_std)
        self.image_flow = FlowSequence(self._image_layers())

    def _image_layers(self) -> list[nn.Module]:
        c, h, _ = self.coarse_shape
        opts = {"hidden": self._config["hidden"], "depth": self._config["unet_depth"]}
        layers: list[nn.Module] = []
        for _ in range(self._config["n_scales"]):
            layers.extend(RevNetStep(c, h, flip=bool(j % 2), **opts) for j in range(self._config["n_steps"]))
            layers.append(Upsqueeze())
            c, h = c // 4, 2 * h
        layers.append(ActNorm(c))
        return layers

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    # the three stages ------------------------------------------------------------------------

    def latent_to_z(self, w: torch.Tensor) -> torch.Tensor:
        """Latent flow ``z = g(w)``, shape ``(B, M)``."""
        return self.latent_flow(w[:, :, None, None])[0].flatten(1)

    def latent_density(self, z: torch.Tensor) -> torch.Tensor:
        """``log p_z(z) = log N(g^{-1}(z); 0, I) - log|det J_g|`` for ``z`` of shape ``(B, M)``."""
        w, logdet = self.latent_flow.inverse(z[:, :, None, None])
        return standard_normal_log_prob(w) - logdet

    def to_manifold_space(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x' = F^{-1}(x)`` flattened to ``(B, N)`` and ``log|det J_F(x')|``."""
        x_prime, logdet = self.image_flow.inverse(x)
        return x_prime.flatten(1), logdet

    def from_manifold_space(self, x_prime: torch.Tensor) -> torch.Tensor:
        """``x = F(x')`` for ``x'`` of shape ``(B, N)``."""
        return self.image_flow(x_prime.reshape(-1, *self.coarse_shape))[0]

    # Prior interface ------------------------------------------------------------------------

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.from_manifold_space(self.layer(self.latent_to_z(z)))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        z_mode = self.layer.inverse_mean(self.to_manifold_space(x)[0])
        return self.latent_flow.inverse(z_mode[:, :, None, None])[0].flatten(1)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """``F(A z+ + b)`` with ``z+`` the stochastic-inverse mode of ``F^{-1}(x)``: the latent flow cancels."""
        x_prime = self.to_manifold_space(x)[0]
        return self.from_manifold_space(self.layer(self.layer.inverse_mean(x_prime)))

    def _latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def sample_latent(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        return temperature * randn(n, self.latent_dim, generator, self)

    def sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, *, s: float = 0.0
    ) -> torch.Tensor:
        """``n`` images ``F(x')``, ``x' ~ N(A g(w) + b, s Sigma)``, ``w ~ N(0, T^2 I)``.

        ``s = 0`` (default) samples on the learned manifold, ``s = 1`` from the trained density.
        """
        n = check_int(n, "n", minimum=1)
        w = self.sample_latent(n, check_temperature(temperature), generator)
        return self.from_manifold_space(self.layer(self.latent_to_z(w), check_scale(s), generator))

    def log_prob(
        self, x: torch.Tensor, n_samples: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The eq. 7 bound (``n_samples=None``) or the importance-sampled estimate with ``n_samples`` draws.

        Without a ``generator`` the draws use a fixed seed, so repeated calls agree.
        """
        x = self.check_data(x)
        if n_samples is None:
            return self._log_prob(x)
        return self._importance_log_prob(x, check_int(n_samples, "n_samples", minimum=1), generator)

    def _noise(self, n: int, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        return randn(n * batch, self.latent_dim, generator, self).reshape(n, batch, self.latent_dim)

    def elbo_terms(
        self, x: torch.Tensor, n: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Manifold term, ``log p_z`` of ``n`` draws of ``q(z|x')`` ``(n, B)``, and ``log|det J_F|``."""
        x_prime, logdet_f = self.to_manifold_space(x)
        z = self.layer.inverse_sample_from_noise(x_prime, self._noise(n, x.shape[0], generator))
        log_pz = self.latent_density(z.reshape(-1, self.latent_dim)).reshape(n, -1)
        return self.layer.manifold_term(x_prime), log_pz, logdet_f

    def elbo(self, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. 7 plus the image flow's log-det, with ``n_samples`` draws for the expectation, shape ``(B,)``."""
        manifold, log_pz, logdet_f = self.elbo_terms(x, n_samples, generator)
        return manifold + log_pz.mean(0) - logdet_f

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.elbo(x, self._config["n_bound_samples"])

    def _importance_log_prob(self, x: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
        manifold, log_pz, logdet_f = self.elbo_terms(x, n, generator)
        return manifold + torch.logsumexp(log_pz, 0) - math.log(n) - logdet_f


def nif_loss(
    prior: NIF, x: torch.Tensor, generator: torch.Generator | None, n_samples: int = 1
) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative eq. 7 bound per data dimension (batch mean), with the bound's parts as metrics."""
    manifold, log_pz, logdet_f = prior.elbo_terms(x, n_samples, generator)
    elbo = manifold + log_pz.mean(0) - logdet_f
    loss = -elbo.mean() / prior.data_dim
    metrics = {
        "manifold": float(manifold.detach().mean()) / prior.data_dim,
        "latent": float(log_pz.detach().mean()) / prior.data_dim,
        "logdet": float(logdet_f.detach().mean()) / prior.data_dim,
        "noise_std": float(prior.layer.std.detach().mean()),
    }
    return loss, metrics
