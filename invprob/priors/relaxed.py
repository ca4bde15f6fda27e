"""Relaxed injective probability flow: a regularised autoencoder read as an injective flow.

A decoder ``g: R^d -> R^D`` (the generator) and an encoder ``h: R^D -> R^d`` with
``g(h(x)) = x`` on the data (Kumar et al. 2020, sec. 2.2). For ``x`` on the range of ``g`` the
injective change of variables (eq. 2-3) gives

    log p(x) = log p_z(h(x)) - 1/2 log det(J^T J),     J = J_g(h(x))  (D x d),

and with ``log s <= s / lam + log lam - 1`` applied to the squared singular values of ``J``:

    log p(x) >= log p_z(h(x)) - ||J||_F^2 / (2 lam) - d/2 log lam + d/2          (eq. 4)
    log p(x) >= log p_z(h(x)) - d/2 log(||J||_F^2 / d)                         (eq. 5, best lam)

Training (see :mod:`invprob.training.relaxed`) minimises the penalty forms of these bounds,
eq. 9 ("InjFlow^ln", from eq. 5) and eq. 10 ("InjFlow", from eq. 4), where ``||J||_F^2`` is
replaced by the one-probe Hutchinson estimate ``||J v||^2``, ``v ~ N(0, I_d)``, computed with a
Jacobian-vector product; see :func:`injflow_terms`.

After training, a *post-fit* latent density (full-covariance Gaussian, or a mixture of 10
full-covariance Gaussians fitted with scikit-learn, sec. 2.2.1) replaces the training prior
``N(0, sigma^2 I)``; it is stored as tensors (weights, means, Cholesky factors), so it saves in
safetensors like every other weight.

``log_prob`` is the eq. 5 lower bound with the post-fit density and the *exact* Frobenius norm
(``d`` Jacobian-vector products), evaluated at the encoding of ``x``: it is a density on the range of
``g``, so for ``x`` off the range it scores the projection ``g(h(x))``.

References:
    Kumar, Poole, Murphy (2020), "Regularized Autoencoders via Relaxed Injective Probability Flow"
    (AISTATS).

Example:
    >>> import torch
    >>> prior = RelaxedInjectiveFlow((1, 8, 8), 4, channels=(4, 8))
    >>> x = torch.rand(2, 1, 8, 8) * 2 - 1
    >>> prior.encode(x).shape, prior.project(x).shape
    (torch.Size([2, 4]), torch.Size([2, 1, 8, 8]))
    >>> loss, metrics = injflow_loss(prior, x, torch.Generator().manual_seed(0))
    >>> bool(torch.isfinite(loss))
    True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from .._checks import check_finite, check_int
from .base import LOG_2PI, Prior, randn

if TYPE_CHECKING:  # scikit-learn takes about 1.5 s to import: only fit_latent_density needs it
    from sklearn.mixture import GaussianMixture

Objective = Literal["log_frobenius", "frobenius"]
DensityKind = Literal["prior", "gaussian", "gmm"]


def _check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def conv_encoder(data_shape: tuple[int, int, int], latent_dim: int, channels: tuple[int, ...]) -> nn.Sequential:
    """``h``: stride-2 4x4 convolutions with ELU (one per entry of ``channels``), then a linear map to ``d``."""
    c, height, width = data_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, out, 4, stride=2, padding=1), nn.ELU()]
        c = out
    scale = 2 ** len(channels)
    layers += [nn.Flatten(), nn.Linear(c * (height // scale) * (width // scale), latent_dim)]
    return nn.Sequential(*layers)


def conv_decoder(data_shape: tuple[int, int, int], latent_dim: int, channels: tuple[int, ...]) -> nn.Sequential:
    """``g``: a linear map to the coarsest grid, stride-2 4x4 transposed convolutions with ELU, a 3x3 output convolution."""
    c_out, height, width = data_shape
    scale = 2 ** len(channels)
    ups = list(reversed(channels))
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, ups[0] * (height // scale) * (width // scale)),
        nn.ELU(),
        nn.Unflatten(1, (ups[0], height // scale, width // scale)),
    ]
    for c_in, c_next in zip(ups, ups[1:] + ups[-1:], strict=True):
        layers += [nn.ConvTranspose2d(c_in, c_next, 4, stride=2, padding=1), nn.ELU()]
    layers.append(nn.Conv2d(ups[-1], c_out, 3, padding=1))
    return nn.Sequential(*layers)


class RelaxedInjectiveFlow(Prior):
    """Regularised autoencoder prior from the relaxed injective flow (see the module docstring).

    Args:
        data_shape: ``(C, H, W)``; ``H`` and ``W`` divisible by ``2 ** len(channels)``.
        latent_dim: ``d``.
        channels: channel counts of the encoder's stride-2 stages (the decoder mirrors them).
        prior_std: ``sigma`` of the training prior ``N(0, sigma^2 I)``; the latent density until
            :meth:`fit_latent_density` replaces it.
        refine_steps: Gauss-Newton steps that refine the amortised code ``h(x)`` towards
            ``argmin_z ||g(z) - x||^2`` in :meth:`encode` (0: ``encode = h``).
        n_components: number of mixture components of the stored latent density (set by
            :meth:`fit_latent_density`; part of the config so checkpoints rebuild).
        density_kind: ``"prior"``, ``"gaussian"`` or ``"gmm"`` (informational, set by the post-fit).
    """

    log_prob_kind = "bound"

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        latent_dim: int,
        channels: tuple[int, ...] = (32, 64, 128),
        prior_std: float = 1.0,
        refine_steps: int = 5,
        n_components: int = 1,
        density_kind: DensityKind = "prior",
    ) -> None:
        super().__init__(data_shape, latent_dim)
        if len(self.data_shape) != 3:
            raise ValueError(f"data_shape: expected (C, H, W), got {self.data_shape}")
        self.channels = tuple(check_int(c, "channels", minimum=1) for c in channels)
        if not self.channels:
            raise ValueError("channels: expected at least one stage")
        scale = 2 ** len(self.channels)
        if self.data_shape[1] % scale or self.data_shape[2] % scale:
            raise ValueError(f"data_shape: H and W must be divisible by 2**len(channels) = {scale}, got {self.data_shape}")
        self.prior_std = _check_positive(prior_std, "prior_std")
        self.refine_steps = check_int(refine_steps, "refine_steps", minimum=0)
        if density_kind not in ("prior", "gaussian", "gmm"):
            raise ValueError(f"density_kind: expected 'prior', 'gaussian' or 'gmm', got {density_kind!r}")
        self.density_kind = density_kind
        self.encoder = conv_encoder(self.data_shape, self.latent_dim, self.channels)  # type: ignore[arg-type]
        self.decoder = conv_decoder(self.data_shape, self.latent_dim, self.channels)  # type: ignore[arg-type]
        k = check_int(n_components, "n_components", minimum=1)
        eye = torch.eye(self.latent_dim).expand(k, -1, -1)
        self.register_buffer("density_log_weights", torch.full((k,), -math.log(k)))
        self.register_buffer("density_means", torch.zeros(k, self.latent_dim))
        self.register_buffer("density_scale_tril", self.prior_std * eye.clone())

    def config(self) -> dict[str, Any]:
        return {
            "data_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            "channels": list(self.channels),
            "prior_std": self.prior_std,
            "refine_steps": self.refine_steps,
            "n_components": int(self.density_log_weights.shape[0]),
            "density_kind": self.density_kind,
        }

    # generator, encoder and their Jacobian -------------------------------------------------

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def amortised_encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder network ``h(x)`` (no refinement)."""
        return self.encoder(self.check_data(x))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        for _ in range(self.refine_steps):
            z = self._gauss_newton_step(z, x)
        return z

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder Jacobians ``J_g(z)``, shape ``(B, D, d)``, from ``d`` Jacobian-vector products."""
        return self._jacobian(self.check_latent(z))

    def _jacobian(self, z: torch.Tensor) -> torch.Tensor:
        d = self.latent_dim
        basis = torch.eye(d, dtype=z.dtype, device=z.device).repeat(z.shape[0], 1)
        _, columns = self.jvp(z.repeat_interleave(d, dim=0), basis)
        return columns.reshape(z.shape[0], d, -1).transpose(1, 2)

    def jvp(self, z: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g(z), J_g(z) v)``, both of shape ``(B, *data_shape)``, differentiable in ``z`` and the weights.

        Computed by differentiating a vector-Jacobian product ``u -> J^T u`` (linear in ``u``) with
        respect to ``u``: two reverse passes, much faster on CPU than PyTorch's forward mode
        through transposed convolutions.
        """
        with torch.enable_grad():
            z_in = z if z.requires_grad else z.detach().requires_grad_(True)
            out = self.decoder(z_in)
            u = torch.zeros_like(out, requires_grad=True)
            (vjp,) = torch.autograd.grad(out, z_in, u, create_graph=True)
            (jv,) = torch.autograd.grad(vjp, u, v, create_graph=True)
        return out, jv

    def frobenius_sq(self, z: torch.Tensor) -> torch.Tensor:
        """Exact ``||J_g(z)||_F^2`` per row, shape ``(B,)``."""
        return self.jacobian(z).pow(2).sum((1, 2))

    def hutchinson_frobenius_sq(
        self, z: torch.Tensor, n_probes: int = 1, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Unbiased estimate of ``||J_g(z)||_F^2 = E_v ||J v||^2``, ``v ~ N(0, I_d)`` (sec. 2.2), shape ``(B,)``."""
        z = self.check_latent(z)
        n_probes = check_int(n_probes, "n_probes", minimum=1)
        probes = randn(n_probes * z.shape[0], self.latent_dim, generator, self)
        _, jv = self.jvp(z.repeat(n_probes, 1), probes)
        return jv.flatten(1).pow(2).sum(1).reshape(n_probes, -1).mean(0)

    def _gauss_newton_step(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One damped Gauss-Newton step on ``||g(z) - x||^2``, kept only where it lowers the residual."""
        jac = self._jacobian(z)
        resid = (self.decoder(z) - x).flatten(1)
        gram = jac.transpose(1, 2) @ jac
        damping = 1e-8 * gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
        gram = gram + damping[:, None, None] * torch.eye(self.latent_dim, dtype=z.dtype, device=z.device)
        step = torch.linalg.solve(gram, (jac.transpose(1, 2) @ resid[..., None]))[..., 0]
        candidate = z - step
        new_resid = (self.decoder(candidate) - x).flatten(1)
        better = new_resid.pow(2).sum(1) < resid.pow(2).sum(1)
        return torch.where(better[:, None], candidate, z)

    # latent density --------------------------------------------------------------------------

    def _latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log sum_k w_k N(z; m_k, L_k L_k^T)`` for the stored density, shape ``(B,)``."""
        diff = (z[:, None, :] - self.density_means).unsqueeze(-1)  # (B, K, d, 1)
        white = torch.linalg.solve_triangular(self.density_scale_tril, diff, upper=False)[..., 0]
        log_det = self.density_scale_tril.diagonal(dim1=1, dim2=2).log().sum(-1)
        comp = -0.5 * (white.pow(2).sum(-1) + self.latent_dim * LOG_2PI) - log_det
        return torch.logsumexp(comp + self.density_log_weights, dim=1)

    def sample_latent(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws from the stored density, shrunk towards its mean: ``m + T (z - m)``.

        For a single Gaussian this scales the covariance by ``T^2``; ``T = 0`` returns the mean.
        """
        weights = self.density_log_weights.exp().cpu().to(torch.float64)
        index = torch.multinomial(weights, n, replacement=True, generator=generator).to(self.device)
        eps = randn(n, self.latent_dim, generator, self)
        draws = self.density_means[index] + (self.density_scale_tril[index] @ eps[..., None])[..., 0]
        mean = self.density_log_weights.exp() @ self.density_means
        return mean + temperature * (draws - mean)

    @torch.no_grad()
    def fit_latent_density(
        self, codes: torch.Tensor, kind: Literal["gaussian", "gmm"] = "gmm", n_components: int = 10, seed: int = 0
    ) -> GaussianMixture:
        """Replace the latent density by a post-fit one on ``codes`` (sec. 2.2.1); returns the scikit-learn model.

        ``kind="gaussian"``: one full-covariance Gaussian; ``"gmm"``: ``n_components`` full-covariance
        Gaussians fitted by scikit-learn's EM (``random_state=seed``).
        """
        codes = check_finite(self.check_latent(codes, "codes"), "codes")
        if kind not in ("gaussian", "gmm"):
            raise ValueError(f"kind: expected 'gaussian' or 'gmm', got {kind!r}")
        k = 1 if kind == "gaussian" else check_int(n_components, "n_components", minimum=1)
        if codes.shape[0] < max(k, 2):
            raise ValueError(f"codes: need at least {max(k, 2)} latent vectors, got {codes.shape[0]}")
        from sklearn.mixture import GaussianMixture

        mixture = GaussianMixture(n_components=k, covariance_type="full", random_state=seed)
        mixture.fit(codes.detach().cpu().double().numpy())
        self.set_latent_density(
            np.log(mixture.weights_), mixture.means_, np.linalg.cholesky(mixture.covariances_), kind
        )
        return mixture

    def set_latent_density(
        self, log_weights: np.ndarray, means: np.ndarray, scale_tril: np.ndarray, kind: DensityKind
    ) -> None:
        """Store a Gaussian mixture as buffers: ``log_weights (K,)``, ``means (K, d)``, Cholesky factors ``(K, d, d)``."""
        like = dict(dtype=self.dtype, device=self.device)
        self.density_log_weights = torch.as_tensor(log_weights, **like)
        self.density_means = torch.as_tensor(means, **like)
        self.density_scale_tril = torch.as_tensor(scale_tril, **like)
        self.density_kind = kind

    # densities -------------------------------------------------------------------------------

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 5 lower bound with the stored latent density and the exact ``||J||_F^2``."""
        z = self._encode(x)
        fro = self._jacobian(z).pow(2).sum((1, 2))
        return self._latent_log_prob(z) - 0.5 * self.latent_dim * torch.log(fro / self.latent_dim)

    def manifold_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Injective change of variables (eq. 3) at the encoding: ``log p_z(z) - 1/2 log det(J^T J)``.

        Exact for ``x`` on the range of ``g``; :meth:`log_prob` (eq. 5) never exceeds it.
        """
        z = self._encode(self.check_data(x))
        jac = self._jacobian(z)
        return self._latent_log_prob(z) - 0.5 * torch.logdet(jac.transpose(1, 2) @ jac)


def injflow_terms(
    prior: RelaxedInjectiveFlow,
    x: torch.Tensor,
    generator: torch.Generator | None,
    *,
    eta: float = 0.1,
    fd_eps: float | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample terms of the eq. 9 / eq. 10 objectives, each of shape ``(B,)``.

    With ``z = h(x)`` and one probe ``v ~ N(0, I_d)`` per sample:

    - ``prior``: ``||z||^2 / 2`` (times ``1/sigma^2`` in the loss);
    - ``recon``: ``||x - g(z)||^2``;
    - ``jv_sq``: ``max(||J v||^2, eta^2 ||v||^2)`` (the clipped Hutchinson estimate of ``||J||_F^2``);
    - ``injectivity``: ``[||J v|| / ||v|| - eta]_-^2`` (local-injectivity penalty).

    ``J v`` is an exact Jacobian-vector product (:meth:`RelaxedInjectiveFlow.jvp`), or the finite difference
    ``(g(z + eps v) - g(z)) / eps`` of eq. 8 when ``fd_eps`` is given.
    """
    z = prior.encoder(x)
    v = randn(z.shape[0], prior.latent_dim, generator, prior)
    if fd_eps is None:
        out, jv = prior.jvp(z, v)
    else:
        out = prior.decoder(z)
        jv = (prior.decoder(z + fd_eps * v) - out) / fd_eps
    jv_norm_sq = jv.flatten(1).pow(2).sum(1)
    v_norm_sq = v.pow(2).sum(1)
    ratio = (jv_norm_sq / v_norm_sq).clamp_min(1e-20).sqrt()
    return {
        "prior": 0.5 * z.pow(2).sum(1),
        "recon": (x - out).flatten(1).pow(2).sum(1),
        "jv_sq": torch.maximum(jv_norm_sq, eta**2 * v_norm_sq),
        "injectivity": (ratio - eta).clamp(max=0).pow(2),
    }


def injflow_loss(
    prior: RelaxedInjectiveFlow,
    x: torch.Tensor,
    generator: torch.Generator | None,
    *,
    objective: Objective = "log_frobenius",
    mu: float = 1.0,
    mu_in: float = 1.0,
    eta: float = 0.1,
    lam: float = 1.0,
    fd_eps: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The batch mean of eq. 9 (``objective="log_frobenius"``, InjFlow^ln) or eq. 10 (``"frobenius"``, InjFlow).

    ``||z||^2 / (2 sigma^2) + mu ||x - g(z)||^2 + F + mu_in [||Jv||/||v|| - eta]_-^2`` with
    ``F = d/2 log max(||Jv||^2, eta^2 ||v||^2)`` (eq. 9) or ``F = max(...) / (2 lam)`` (eq. 10);
    divided by ``D`` so the value is per data dimension. Returns the loss and its parts as floats.
    """
    if objective not in ("log_frobenius", "frobenius"):
        raise ValueError(f"objective: expected 'log_frobenius' or 'frobenius', got {objective!r}")
    terms = injflow_terms(prior, x, generator, eta=eta, fd_eps=fd_eps)
    if objective == "log_frobenius":
        jac_term = 0.5 * prior.latent_dim * terms["jv_sq"].log()
    else:
        jac_term = terms["jv_sq"] / (2 * lam)
    per_sample = terms["prior"] / prior.prior_std**2 + mu * terms["recon"] + jac_term + mu_in * terms["injectivity"]
    loss = per_sample.mean() / prior.data_dim
    metrics = {
        "recon_mse": float(terms["recon"].detach().mean()) / prior.data_dim,
        "jacobian": float(jac_term.detach().mean()),
        "injectivity": float(terms["injectivity"].detach().mean()),
        "latent_norm_sq": float(2 * terms["prior"].detach().mean()),
    }
    return loss, metrics
