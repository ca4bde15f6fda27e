"""The Prior contract, checked on every prior in tests/prior_registry.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

from invprob.priors import PRIOR_CLASSES, load_prior_file
from invprob.training import CheckpointError

from prior_registry import PRIOR_FACTORIES, build

NAMES = sorted(PRIOR_FACTORIES)


@pytest.fixture(params=NAMES)
def prior(request):
    return build(request.param)


def _latent(prior, n=3, seed=1):
    return prior.sample_latent(n, 1.0, torch.Generator().manual_seed(seed))


def test_shapes_and_kinds(prior):
    z = _latent(prior)
    assert z.shape == (3, prior.latent_dim)
    x = prior.decode(z)
    assert x.shape == (3, *prior.data_shape) and x.dtype == torch.float64
    assert prior.encode(x).shape == (3, prior.latent_dim)
    assert prior.log_prob(x).shape == (3,)
    assert prior.latent_log_prob(z).shape == (3,)
    assert prior.log_prob_kind in ("exact", "bound", "estimate")
    assert type(prior).__name__ in PRIOR_CLASSES


def test_encode_inverts_decode_on_the_range(prior):
    z = _latent(prior)
    torch.testing.assert_close(prior.encode(prior.decode(z)), z, rtol=1e-5, atol=1e-5)


def test_project_is_idempotent_and_lands_on_the_range(prior):
    x = torch.randn(2, *prior.data_shape, dtype=torch.float64)
    p = prior.project(x)
    torch.testing.assert_close(prior.project(p), p, rtol=1e-5, atol=1e-5)
    if prior.is_bijective:
        torch.testing.assert_close(p, x, rtol=1e-6, atol=1e-6)


def test_log_prob_is_finite_and_differentiable(prior):
    x = prior.decode(_latent(prior, 2)).detach().requires_grad_(True)
    lp = prior.log_prob(x)
    assert torch.isfinite(lp).all()
    (grad,) = torch.autograd.grad(lp.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_both_projections_with_a_density_agree_on_v_and_are_differentiable(prior):
    """project_with_log_prob and project_with_latent_log_prob return P(x) and a finite, differentiable density."""
    x = (prior.decode(_latent(prior, 2)) + 0.01 * torch.randn(2, *prior.data_shape, dtype=torch.float64)).detach()
    for method in (prior.project_with_log_prob, prior.project_with_latent_log_prob):
        xg = x.clone().requires_grad_(True)
        v, lp = method(xg)
        torch.testing.assert_close(v, prior.project(x), rtol=1e-5, atol=1e-5)
        assert lp.shape == (2,) and torch.isfinite(lp).all()
        (grad,) = torch.autograd.grad(lp.sum(), xg)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_sampling_is_seeded_and_temperature_zero_is_the_mode_of_the_base(prior):
    a = prior.sample(2, generator=torch.Generator().manual_seed(5))
    b = prior.sample(2, generator=torch.Generator().manual_seed(5))
    assert a.shape == (2, *prior.data_shape)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    cold = prior.sample_latent(2, 0.0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(cold[0], cold[1], rtol=0, atol=0)


def test_bad_inputs_raise_clear_errors(prior):
    with pytest.raises(ValueError, match="expected shape"):
        prior.decode(torch.zeros(2, prior.latent_dim + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected shape"):
        prior.encode(torch.zeros(2, *prior.data_shape[:-1], prior.data_shape[-1] + 1, dtype=torch.float64))
    bad = torch.zeros(2, *prior.data_shape, dtype=torch.float64)
    bad[0].view(-1)[0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        prior.encode(bad)
    with pytest.raises(ValueError, match="non-finite"):
        prior.log_prob(bad)
    with pytest.raises(ValueError, match="temperature"):
        prior.sample(2, temperature=-1.0)
    for bad_temperature in (math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match="temperature"):
            prior.sample(2, temperature=bad_temperature)


def test_save_load_round_trip_is_bit_exact(prior, tmp_path):
    prior.decode(_latent(prior))  # run once so data-dependent initialisations are done
    json.dumps(prior.config())
    prior.save(tmp_path / "p", note="contract")
    loaded = load_prior_file(tmp_path / "p", dtype=torch.float64, expected_class=type(prior).__name__)
    assert loaded.metadata["note"] == "contract"
    for (ka, a), (kb, b) in zip(prior.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    z = _latent(prior)
    torch.testing.assert_close(loaded.decode(z), prior.decode(z), rtol=0, atol=0)


def test_loading_another_data_shape_or_class_is_refused(prior, tmp_path):
    prior.save(tmp_path / "p")
    with pytest.raises(CheckpointError, match="data shape"):
        load_prior_file(tmp_path / "p", expected_data_shape=(7, 7, 7))
    with pytest.raises(CheckpointError, match="expected a"):
        load_prior_file(tmp_path / "p", expected_class="NotThisPrior")
