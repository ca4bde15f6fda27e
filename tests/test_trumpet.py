"""TRUMPET: inverse on the range, projection, the eq. 6 value against the exact eq. 2, Algorithm 2."""

from __future__ import annotations

import math

import pytest
import torch

from invprob.priors import TRUMPET, logdet_jtj_exact, logdet_jtj_series
from invprob.priors.layers import ActNorm, FlowSequence, InjectiveConv1x1
from invprob.priors.trumpet import injective_plan


def _tiny(seed=0, noise=0.2, **kwargs):
    """A tiny float64 TRUMPET with all weights randomised (couplings are not constant maps)."""
    torch.manual_seed(seed)
    opts = dict(n_scales=2, hidden=8, unet_depth=1, n_latent_steps=2, latent_hidden=16)
    opts.update(kwargs)
    prior = TRUMPET(opts.pop("data_shape", (1, 8, 8)), opts.pop("latent_dim", 16), **opts).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        prior.decode(torch.randn(8, prior.latent_dim, generator=g, dtype=torch.float64))
        for p in prior.parameters():
            p.add_(noise * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return prior.eval()


def _z(prior, n=3, seed=4):
    return torch.randn(n, prior.latent_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("variant", ["linear", "relu"])
def test_encode_inverts_decode_and_project_is_a_projection(variant):
    prior = _tiny(variant=variant, gamma=0.0)
    z = _z(prior)
    x = prior.decode(z)
    torch.testing.assert_close(prior.encode(x), z, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(prior.project(x), x, rtol=1e-6, atol=1e-6)
    off = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    p = prior.project(off)
    torch.testing.assert_close(prior.project(p), p, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(p, prior.decode(prior.encode(off)), rtol=1e-6, atol=1e-6)
    assert (p - off).norm() > 0.1  # a generic image is not on the 16-dimensional range


def test_tikhonov_regularisation_keeps_the_inverse_close():
    prior = _tiny(gamma=1e-3)
    z = _z(prior)
    torch.testing.assert_close(prior.encode(prior.decode(z)), z, rtol=1e-3, atol=1e-3)


def test_plan_and_bad_architectures():
    assert injective_plan((1, 32, 32), 64, 3) == [((4, 16, 16), 1), ((8, 8, 8), 1), ((16, 4, 4), 2)]
    assert TRUMPET((1, 32, 32), 64, n_scales=3, hidden=4, n_latent_steps=0).latent_shape == (4, 4, 4)
    with pytest.raises(ValueError, match="power of 2"):
        TRUMPET((1, 8, 8), 12)
    with pytest.raises(ValueError, match="n_scales"):
        TRUMPET((1, 8, 8), 16, n_scales=4)
    with pytest.raises(ValueError, match="data_shape"):
        TRUMPET((64,), 16)
    with pytest.raises(ValueError, match="latent_dim"):
        TRUMPET((1, 8, 8), 128)


def test_log_prob_is_the_layerwise_sum_of_eq6():
    prior = _tiny()
    x = prior.decode(_z(prior))
    z_prime, logdet_g = prior.g_pinv(x)
    z, logdet_h = prior.h_inverse(z_prime)
    expected = prior.latent_log_prob(z) - logdet_h - logdet_g
    torch.testing.assert_close(prior.log_prob(x), expected)
    # the latent flow enters once: log p_Z'(z') against brute force through h^{-1}
    jac = torch.autograd.functional.jacobian(lambda v: prior.h_inverse(v[None])[0][0], z_prime[0])
    brute = prior.latent_log_prob(z[:1]) + torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(prior.latent_flow_log_prob(z_prime[:1]), brute)


def test_latent_log_prob_of_the_projection_drops_only_the_injective_log_det():
    """project_with_latent_log_prob: the same v as project_with_log_prob, log p_Z'(g^dagger(x)), and the
    difference of the two densities is the injective part's log-det at z'."""
    prior = _tiny()
    x = prior.decode(_z(prior)) + 0.05 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    v, latent = prior.project_with_latent_log_prob(x)
    v_range, on_range = prior.project_with_log_prob(x)
    z_prime, logdet_g = prior.g_pinv(x)
    torch.testing.assert_close(v, v_range)
    torch.testing.assert_close(latent, prior.latent_flow_log_prob(z_prime))
    torch.testing.assert_close(on_range - latent, -prior.g(z_prime)[1])
    assert (logdet_g.abs() > 1e-3).all(), "the test needs a non-trivial injective log-det"


def test_bound_is_exact_for_a_single_injective_step():
    """g = upsqueeze o W o (bijective): the eq. 6 sum equals eq. 2 exactly."""
    prior = _tiny(data_shape=(1, 4, 4), latent_dim=8, n_scales=1, n_bijective=0, gamma=0.0)
    x = prior.decode(_z(prior))
    torch.testing.assert_close(prior.log_prob(x), prior.log_prob_exact(x), rtol=1e-8, atol=1e-8)


def _set_post_expansion_actnorms(prior, log_scale):
    """Set the actnorms that act after the first injective expansion (inside bijective revnet steps)."""
    for step in prior.injective.layers[1:]:
        for layer in step.modules():
            if isinstance(layer, ActNorm):
                layer.log_scale.data.fill_(log_scale)


@pytest.mark.parametrize("log_scale", [0.3, -0.3])
def test_bound_direction_depends_on_the_layers_after_the_expansion(log_scale):
    """-log p(eq. 6) >= -log p(exact) when the layers after an expansion expand, and fails when they contract.

    Appendix B.1 states the inequality in general; its proof needs ``V_2^T U_1`` square. This test
    pins the behaviour: the eq. 6 value is an upper bound on -log p for expanding layers only.
    """
    prior = _tiny(n_bijective=1, noise=0.02)
    _set_post_expansion_actnorms(prior, log_scale)
    x = prior.decode(_z(prior))
    gap = prior.log_prob_exact(x) - prior.log_prob(x)  # = bound on -log p minus exact -log p
    assert torch.all(gap > 0) if log_scale > 0 else torch.all(gap < 0)


def test_layerwise_sum_overcounts_an_expanding_layer_after_an_injection():
    """Two layers: W (2 -> 4 channels), then actnorm with scale a: sum - exact = (D' - d) log a."""
    torch.manual_seed(0)
    seq = FlowSequence([InjectiveConv1x1(2, gamma=0.0), ActNorm(4)]).double()
    x = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    seq(x)
    seq.layers[1].log_scale.data.fill_(math.log(1.5))
    _, total = seq(x)
    exact = 0.5 * logdet_jtj_exact(lambda v: seq(v.view(-1, 2, 2, 2))[0].flatten(1), x.flatten(1))
    torch.testing.assert_close(total - exact, torch.tensor([(16 - 8) * math.log(1.5)], dtype=torch.float64))


def test_series_estimator_on_a_linear_map():
    torch.manual_seed(0)
    m = torch.randn(12, 5, dtype=torch.float64)
    z = torch.randn(2, 5, dtype=torch.float64)
    exact = logdet_jtj_exact(lambda v: v @ m.T, z)
    torch.testing.assert_close(exact, torch.linalg.slogdet(m.T @ m)[1].expand(2))
    lam = torch.linalg.eigvalsh(m.T @ m)
    beta = 0.95 / lam.max()
    n_terms = 60
    truncation = sum(((1 - beta * lam) ** k).sum() / k for k in range(n_terms + 1, 2000))
    est, stderr = logdet_jtj_series(
        lambda v: v @ m.T, z, n_terms=n_terms, n_probes=400, n_power_iterations=100, generator=torch.Generator().manual_seed(1)
    )
    assert torch.all((est - (exact + truncation)).abs() < 4 * stderr + 1e-6), (est, exact, stderr)
    with pytest.raises(ValueError, match="n_terms"):
        logdet_jtj_series(lambda v: v @ m.T, z, n_terms=0)
    with pytest.raises(ValueError, match="beta_factor"):
        logdet_jtj_series(lambda v: v @ m.T, z, beta_factor=3.0)


def test_algorithm2_estimate_is_within_its_monte_carlo_error_of_the_exact_value():
    prior = _tiny(noise=0.05)
    x = prior.decode(_z(prior, n=2))
    exact = prior.log_prob_exact(x)
    z_prime = prior.g_pinv(x)[0]
    n_terms = 30
    bias = []
    for row in z_prime:  # the truncation bias sum_{k > n} tr(A^k) / k, from the eigenvalues
        jac = torch.autograd.functional.jacobian(lambda v: prior.g(v[None])[0].flatten(), row)
        lam = torch.linalg.eigvalsh(jac.T @ jac)
        a = 1 - 0.95 * lam / lam.max()
        bias.append(sum((a**k).sum() / k for k in range(n_terms + 1, 3000)))
    est, stderr = prior.log_prob_estimate(
        x, n_terms=n_terms, n_probes=64, n_power_iterations=30, generator=torch.Generator().manual_seed(0), return_stderr=True
    )
    expected = exact - 0.5 * torch.stack(bias)
    assert torch.all((est - expected).abs() < 4 * stderr + 1e-3), (est, expected, stderr)
    default = prior.log_prob_estimate(x[:1], generator=torch.Generator().manual_seed(0))
    assert default.shape == (1,) and torch.isfinite(default).all()


def test_sample_temperature_and_learnable_base():
    prior = _tiny()
    with torch.no_grad():
        prior.base_mean.fill_(0.5)
        prior.base_log_std.fill_(math.log(2.0))
    z = prior.sample_latent(4000, 0.5, torch.Generator().manual_seed(0))
    z = z.detach()
    assert abs(float(z.mean()) - 0.5) < 0.05 and abs(float(z.std()) - 1.0) < 0.05
    ref = torch.distributions.Normal(0.5, 2.0).log_prob(z[:3]).sum(1)
    torch.testing.assert_close(prior.latent_log_prob(z[:3]), ref)


def test_affine_latent_flow_gives_a_full_covariance_gaussian_and_rejects_unknown_kinds():
    from invprob.priors import TRUMPET

    torch.manual_seed(1)
    prior = TRUMPET((1, 8, 8), 16, n_scales=2, hidden=4, unet_depth=1, latent_flow="linear").double()
    z_prime = torch.randn(5, 16, dtype=torch.float64)
    prior.h_inverse(z_prime)  # data-dependent actnorm initialisation
    with torch.no_grad():
        mean, _ = prior.h(prior.base_mean[None])
        basis, _ = prior.h(prior.base_mean[None] + torch.diag(prior.base_log_std.exp()))
        factor = (basis - mean).T  # columns: images of the base's scaled axes
        covariance = factor @ factor.T
        expected = torch.distributions.MultivariateNormal(mean[0], covariance).log_prob(z_prime)
        torch.testing.assert_close(prior.latent_flow_log_prob(z_prime), expected)
    with pytest.raises(ValueError, match="latent_flow"):
        TRUMPET((1, 8, 8), 16, n_scales=2, latent_flow="spline")
