"""TRUMPET: an injective flow prior (paper sec. 2-3).

``f(z) = g(h(z))``: a bijective latent flow ``h`` on ``R^d`` (revnet steps on ``(d, 1, 1)``
tensors, learnable Gaussian base) followed by an injective expanding network ``g: R^d -> R^n``
(injective revnet steps doubling the channels, bijective revnet steps, upsqueezes).

Example::

    from invprob.priors import TRUMPET
    from invprob.training import train_trumpet

    prior = TRUMPET((1, 32, 32), latent_dim=64)
    train_trumpet(prior, dataset, "runs/trumpet-digits", mse_steps=3000, ml_steps=2000)
    x_on_manifold = prior.project(x)          # g(g^dagger(x))
    bound = prior.log_prob(x)                 # layer-wise value of eq. 6 (fast, differentiable)
    exact = prior.log_prob_exact(x)           # eq. 2 with the full Jacobian (small models)
    estimate = prior.log_prob_estimate(x)     # eq. 2 with Algorithm 2
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._checks import as_image_shape, check_int
from .base import LOG_2PI, Prior, randn
from .layers import (
    ActNorm,
    FlowSequence,
    InjectiveRevNetStep,
    InvertibleConv1x1,
    RevNetStep,
    Upsqueeze,
    latent_flow_layers,
)
from .layers.injective import Variant
from .logdet import logdet_jtj_exact, logdet_jtj_series


def injective_plan(data_shape: tuple[int, int, int], latent_dim: int, n_scales: int) -> list[tuple[tuple[int, int, int], int]]:
    """Per resolution, from the finest: the squeezed shape ``(4C, H/2, W/2)`` and its number of injective steps.

    Going from the image towards the latent space, each scale squeezes, then each injective step
    halves the channels. ``log2(n / latent_dim)`` steps are needed in all: one per scale, the
    rest at the coarsest scale.
    """
    c, h, w = data_shape
    ratio = math.prod(data_shape) / latent_dim
    n_injective = round(math.log2(ratio)) if ratio >= 2 else 0
    if n_injective < 1 or 2**n_injective != ratio:
        raise ValueError(
            f"latent_dim: prod(data_shape) / latent_dim must be a power of 2 >= 2, got {math.prod(data_shape)} / {latent_dim}"
        )
    plan = []
    for scale in range(n_scales):
        if h % 2 or w % 2:
            raise ValueError(f"n_scales: {n_scales} squeezes need sizes divisible by 2**{n_scales}, got {data_shape}")
        c, h, w = 4 * c, h // 2, w // 2
        steps = min(1, n_injective) if scale < n_scales - 1 else n_injective
        if c % 2**steps:
            raise ValueError(f"TRUMPET: {c} channels at scale {scale} cannot be halved {steps} times; use fewer scales")
        plan.append(((c, h, w), steps))
        n_injective -= steps
        c //= 2**steps
    return plan


class TRUMPET(Prior):
    """Injective flow prior ``x = g(h(z))``, ``z ~ N(mu, diag(sigma^2))`` with learnable ``mu, sigma``.

    ``log_prob`` is the layer-wise value of paper eq. 6,

        -log p(x) ~ -log p_Z(z) + sum_l log|det J_{h_l}| + (1/2) sum_k log det(J_{g_k}^T J_{g_k}),

    at ``z = h^{-1}(g^dagger(x))`` (each Jacobian at its layer's input): cheap and differentiable,
    so ``log_prob_kind = "bound"``. It equals the exact eq. 2 whenever ``g`` is a single
    injective layer after bijective ones; in general the two differ by the gap
    ``(1/2)[sum_k log det(J_k^T J_k) - log det(J_g^T J_g)]``, whose sign depends on the weights
    (appendix B.1 claims it is >= 0, but its step ``V_2^T U_1`` is not square, and a contraction
    after an injective layer makes the gap negative; see tests/test_trumpet.py).
    :meth:`log_prob_exact` (full Jacobian) and :meth:`log_prob_estimate` (Algorithm 2) evaluate
    eq. 2 itself at the projection of ``x`` on the range.

    Architecture: ``n_scales`` resolutions; at each, injective revnet steps (channels x2) each
    followed by ``n_bijective`` revnet steps, then an upsqueeze. Couplings use a :class:`~invprob.priors.layers.SmallUNet` with ``hidden`` channels
    and ``unet_depth`` levels. The latent flow has ``n_latent_steps`` revnet steps with
    ``latent_hidden``-wide 1x1 conditioners (``latent_flow="revnet"``), or is one affine map
    ``z' = A z + c`` (``latent_flow="linear"``: an invertible 1x1 convolution and an actnorm), which
    with the Gaussian base makes ``z'`` a full-covariance Gaussian. The affine latent's log-density
    is a quadratic in ``z'`` everywhere, so it cannot blow up on latents far from the training set
    (such as the pseudo-inverse starts of iFlow); coupling layers divide by scales down to 0.01 in
    the normalising direction and can, but they model a multimodal latent set far better (lower
    test NLL, samples that look like the data). ``trumpet-mnist`` and ``trumpet-ellipses`` ship a
    revnet latent flow; benchmarks/BENCHMARKS.md measures both choices on solvers.
    ``variant`` selects the linear or ReLU injective convolution, ``gamma`` the Tikhonov
    regularisation of its pseudo-inverse.
    """

    log_prob_kind = "bound"
    is_bijective = False

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        latent_dim: int,
        *,
        n_scales: int = 3,
        n_bijective: int = 1,
        hidden: int = 32,
        unet_depth: int = 2,
        n_latent_steps: int = 8,
        latent_hidden: int = 128,
        variant: Variant = "linear",
        gamma: float = 1e-3,
        latent_flow: str = "revnet",
    ) -> None:
        super().__init__(as_image_shape(data_shape, "data_shape"), latent_dim)
        self._config = {
            "data_shape": list(self.data_shape),
            "latent_dim": self.latent_dim,
            "n_scales": check_int(n_scales, "n_scales", minimum=1),
            "n_bijective": check_int(n_bijective, "n_bijective", minimum=0),
            "hidden": check_int(hidden, "hidden", minimum=1),
            "unet_depth": check_int(unet_depth, "unet_depth", minimum=0),
            "n_latent_steps": check_int(n_latent_steps, "n_latent_steps", minimum=0),
            "latent_hidden": check_int(latent_hidden, "latent_hidden", minimum=1),
            "variant": variant,
            "gamma": float(gamma),
            "latent_flow": latent_flow,
        }
        if latent_flow not in ("revnet", "linear"):
            raise ValueError(f"latent_flow: expected 'revnet' or 'linear', got {latent_flow!r}")
        plan = injective_plan(self.data_shape, self.latent_dim, n_scales)
        coarse_c, coarse_h, coarse_w = plan[-1][0]
        self.latent_shape = (coarse_c // 2 ** plan[-1][1], coarse_h, coarse_w)
        self.injective = FlowSequence(self._injective_layers(plan, variant, gamma))
        if latent_flow == "linear":
            latent_steps = [InvertibleConv1x1(latent_dim), ActNorm(latent_dim)]
        else:
            latent_steps = latent_flow_layers(self.latent_dim, n_latent_steps, latent_hidden)
        self.latent_flow = FlowSequence(latent_steps)
        self.base_mean = nn.Parameter(torch.zeros(latent_dim))
        self.base_log_std = nn.Parameter(torch.zeros(latent_dim))

    def _injective_layers(self, plan: list, variant: Variant, gamma: float) -> list[nn.Module]:
        layers: list[nn.Module] = []
        n = self._config["n_bijective"]
        opts = {"hidden": self._config["hidden"], "depth": self._config["unet_depth"]}
        for (c, h, _), steps in reversed(plan):
            c //= 2**steps
            for i in range(steps):
                layers.append(InjectiveRevNetStep(c, h, variant=variant, gamma=gamma, flip=bool(i % 2), **opts))
                c *= 2
                layers.extend(RevNetStep(c, h, flip=bool(j % 2), **opts) for j in range(n))
            if not steps:
                layers.extend(RevNetStep(c, h, flip=bool(j % 2), **opts) for j in range(n))
            layers.append(Upsqueeze())
        return layers

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    # --- the two parts -------------------------------------------------------------------
    def g(self, z_prime: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Injective part: ``(B, d) -> (B, *data_shape)`` and ``(1/2) sum_k log det(J_k^T J_k)``."""
        return self.injective(z_prime.reshape(-1, *self.latent_shape))

    def g_pinv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-wise left inverse ``g^dagger(x)`` (Tikhonov pseudo-inverses) and the same log-det sum."""
        z_prime, logdet = self.injective.inverse(x)
        return z_prime.flatten(1), logdet

    def h(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent flow ``z' = h(z)`` and ``log |det J_h(z)|``."""
        z_prime, logdet = self.latent_flow(z[:, :, None, None])
        return z_prime.flatten(1), logdet

    def h_inverse(self, z_prime: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = h^{-1}(z')`` and ``log |det J_h(z)|``."""
        z, logdet = self.latent_flow.inverse(z_prime[:, :, None, None])
        return z.flatten(1), logdet

    # --- Prior interface -----------------------------------------------------------------
    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.g(self.h(z)[0])[0]

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.h_inverse(self.g_pinv(x)[0])[0]

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """``g(g^dagger(x))``: the latent flow cancels, so it is skipped."""
        return self.g(self.g_pinv(x)[0])[0]

    def _project_with_log_prob(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``v = g(z')`` with ``z' = g^dagger(x)``, and the bound of eq. 6 at ``v`` evaluated at ``z'``.

        ``log_prob(v)`` would recompute ``g^dagger(v)``, which is ``z'`` up to the Tikhonov term;
        reusing ``z'`` and the log-det of the forward pass saves one inverse pass of ``g``.
        """
        z_prime = self.g_pinv(x)[0]
        v, logdet_g = self.g(z_prime)
        return v, self.latent_flow_log_prob(z_prime) - logdet_g

    def _project_with_latent_log_prob(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``v = g(z')`` with ``z' = g^dagger(x)``, and ``log p_{Z'}(z')``: eq. 6 without the injective part's log-det."""
        z_prime = self.g_pinv(x)[0]
        return self.g(z_prime)[0], self.latent_flow_log_prob(z_prime)

    def _latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; mu, diag(sigma^2))`` of the learnable base."""
        scaled = (z - self.base_mean) * torch.exp(-self.base_log_std)
        return -0.5 * (scaled.pow(2).sum(1) + self.latent_dim * LOG_2PI) - self.base_log_std.sum()

    def latent_flow_log_prob(self, z_prime: torch.Tensor) -> torch.Tensor:
        """``log p_{Z'}(z') = log p_Z(h^{-1}(z')) - log|det J_h|`` (the density phase 2 fits, eq. 4)."""
        z, logdet_h = self.h_inverse(z_prime)
        return self._latent_log_prob(z) - logdet_h

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z_prime, logdet_g = self.g_pinv(x)
        return self.latent_flow_log_prob(z_prime) - logdet_g

    def sample_latent(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = randn(n, self.latent_dim, generator, self)
        return self.base_mean + temperature * self.base_log_std.exp() * noise

    # --- eq. 2 itself --------------------------------------------------------------------
    def _flat_g(self, z_prime: torch.Tensor) -> torch.Tensor:
        return self.g(z_prime)[0].flatten(1)

    def log_prob_exact(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 2 at ``P(x) = g(g^dagger(x))``: ``log p_{Z'}(z') - (1/2) log det(J_g^T J_g)(z')``.

        Uses the full ``n x d`` Jacobian of ``g`` per image (brute force; small models only).
        """
        x = self.check_data(x)
        z_prime = self.g_pinv(x)[0]
        return self.latent_flow_log_prob(z_prime) - 0.5 * logdet_jtj_exact(self._flat_g, z_prime)

    def log_prob_estimate(
        self,
        x: torch.Tensor,
        *,
        n_terms: int = 10,
        n_probes: int = 10,
        n_power_iterations: int = 10,
        beta_factor: float = 0.95,
        generator: torch.Generator | None = None,
        return_stderr: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Eq. 2 at ``P(x)`` with ``log det(J_g^T J_g)`` from Algorithm 2 (:func:`logdet_jtj_series`).

        ``log |det J_h|`` is exact (the latent flow is bijective), so only the injective part is
        estimated. With ``return_stderr`` also returns the Monte-Carlo standard error (probes only;
        the truncation after ``n_terms`` adds a bias, see :func:`logdet_jtj_series`).
        """
        x = self.check_data(x)
        z_prime = self.g_pinv(x)[0].detach()
        logdet, stderr = logdet_jtj_series(
            self._flat_g,
            z_prime,
            n_terms=n_terms,
            n_probes=n_probes,
            n_power_iterations=n_power_iterations,
            beta_factor=beta_factor,
            generator=generator,
        )
        value = self.latent_flow_log_prob(z_prime).detach() - 0.5 * logdet
        return (value, 0.5 * stderr) if return_stderr else value
