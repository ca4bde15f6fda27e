"""RealNVP: exact inverses and the exact log-density against a brute-force change of variables."""

from __future__ import annotations

import pytest
import torch

from invprob.priors import RealNVP
from invprob.priors.base import standard_normal_log_prob


def _random(shape=(1, 4, 4), seed=0, **kwargs):
    torch.manual_seed(seed)
    opts = dict(n_scales=2, n_steps=2, hidden=6, unet_depth=1)
    opts.update(kwargs)
    prior = RealNVP(shape, **opts).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        prior.encode(torch.randn(6, *shape, generator=g, dtype=torch.float64))
        for p in prior.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return prior.eval()


@pytest.mark.parametrize("shape,n_scales", [((1, 4, 4), 2), ((2, 4, 4), 2), ((1, 8, 8), 3), ((3, 4, 4), 1)])
def test_encode_and_decode_are_exact_inverses(shape, n_scales):
    prior = _random(shape, n_scales=n_scales)
    assert prior.latent_dim == prior.data_dim and prior.is_bijective
    x = torch.randn(3, *shape, dtype=torch.float64)
    z = prior.encode(x)
    torch.testing.assert_close(prior.decode(z), x, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(prior.encode(prior.decode(z)), z, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(prior.project(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("shape,n_scales", [((1, 4, 4), 2), ((2, 4, 4), 2), ((3, 4, 4), 1)])
def test_exact_log_prob_matches_brute_force_change_of_variables(shape, n_scales):
    prior = _random(shape, n_scales=n_scales)
    x = torch.randn(2, *shape, dtype=torch.float64)
    lp = prior.log_prob(x)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: prior.encode(v[None])[0], x[i]).reshape(prior.latent_dim, -1)
        z = prior.encode(x[i : i + 1])
        brute = standard_normal_log_prob(z)[0] + torch.linalg.slogdet(jac)[1]
        torch.testing.assert_close(lp[i], brute, rtol=1e-8, atol=1e-8)


def test_generate_log_det_is_the_negative_of_the_density_correction():
    prior = _random()
    z = torch.randn(2, 16, dtype=torch.float64)
    x, logdet = prior.generate(z)
    torch.testing.assert_close(prior.log_prob(x), standard_normal_log_prob(z) - logdet)


def test_sampling_and_latent_density():
    prior = _random()
    z = prior.sample_latent(3, 0.0)
    assert torch.all(z == 0)
    assert prior.sample(2, temperature=0.7, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 4, 4)
    torch.testing.assert_close(prior.latent_log_prob(z), standard_normal_log_prob(z))


def test_bad_architectures_raise():
    with pytest.raises(ValueError, match="n_scales"):
        RealNVP((1, 6, 6), n_scales=3)
    with pytest.raises(ValueError, match="data_shape"):
        RealNVP((16,))
    with pytest.raises(ValueError, match="n_steps"):
        RealNVP((1, 4, 4), n_steps=0)
    with pytest.raises(ValueError, match="scale_range"):
        RealNVP((1, 4, 4), scale_range=(2.0, 4.0))


def test_every_coupling_uses_the_scale_range_and_far_inputs_stay_finite():
    prior = _random(scale_range=(0.5, 2.0))
    couplings = [m for m in prior.modules() if type(m).__name__ == "AffineCoupling"]
    assert len(couplings) == 7 and all(c.scale_range == (0.5, 2.0) for c in couplings)
    assert prior.config()["scale_range"] == [0.5, 2.0]
    assert torch.isfinite(prior.log_prob(1e3 * torch.randn(2, 1, 4, 4, dtype=torch.float64))).all()
