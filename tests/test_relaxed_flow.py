"""Relaxed injective flow: Jacobian estimates, the eq. 9/10 losses, training, post-fit densities."""

import json
import math

import pytest
import torch
from sklearn.mixture import GaussianMixture

from invprob.priors import RelaxedInjectiveFlow, load_prior_file
from invprob.priors.relaxed import injflow_loss, injflow_terms
from invprob.training import CheckpointError, train_relaxed_flow
from invprob.training.relaxed import encode_dataset, penalty_weight

from checkpoint_tools import edit_config


def _prior(**kwargs) -> RelaxedInjectiveFlow:
    torch.manual_seed(0)
    return RelaxedInjectiveFlow((1, 8, 8), 3, channels=(4, 8), **kwargs)


def _z(n: int = 4, seed: int = 1, d: int = 3) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _reference_jacobian(prior: RelaxedInjectiveFlow, z: torch.Tensor) -> torch.Tensor:
    rows = [torch.autograd.functional.jacobian(lambda v: prior.decoder(v[None]).flatten(), zi) for zi in z]
    return torch.stack(rows)


def test_jacobian_and_jvp_match_autograd():
    prior = _prior().double()
    z, v = _z(), _z(seed=2)
    jac = _reference_jacobian(prior, z)
    torch.testing.assert_close(prior.jacobian(z), jac, rtol=1e-10, atol=1e-12)
    out, jv = prior.jvp(z, v)
    torch.testing.assert_close(jv.flatten(1), (jac @ v[..., None])[..., 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, prior.decode(z))


def test_hutchinson_frobenius_estimate_is_unbiased():
    prior = _prior().double()
    z = _z(2)
    exact = prior.frobenius_sq(z)
    torch.testing.assert_close(exact, _reference_jacobian(prior, z).pow(2).sum((1, 2)))
    n = 1500
    single = torch.stack([prior.hutchinson_frobenius_sq(z, 1, torch.Generator().manual_seed(s)) for s in range(3)])
    estimate = prior.hutchinson_frobenius_sq(z, n, torch.Generator().manual_seed(10))
    # one-probe variance of v^T M v for Gaussian v is 2 ||J^T J||_F^2
    gram = _reference_jacobian(prior, z).transpose(1, 2) @ _reference_jacobian(prior, z)
    stderr = (2 * gram.pow(2).sum((1, 2)) / n).sqrt()
    assert ((estimate - exact).abs() < 4 * stderr).all()
    assert (single != exact).any()  # it is an estimate, not the exact value


def test_the_log_frobenius_bound_is_below_the_change_of_variables():
    prior = _prior(refine_steps=0).double()
    x = prior.decode(_z(5))
    exact = prior.manifold_log_prob(x)
    bound = prior.log_prob(x)
    assert (bound <= exact + 1e-10).all()
    jac = prior.jacobian(prior.encode(x))
    expected = prior.latent_log_prob(prior.encode(x)) - 1.5 * torch.log(jac.pow(2).sum((1, 2)) / 3)
    torch.testing.assert_close(bound, expected)


def test_loss_terms_follow_eq9_and_eq10():
    prior = _prior().double()
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    terms = injflow_terms(prior, x, torch.Generator().manual_seed(4), eta=0.1)
    z = prior.amortised_encode(x)
    torch.testing.assert_close(terms["prior"], 0.5 * z.pow(2).sum(1))
    torch.testing.assert_close(terms["recon"], (x - prior.decode(z)).flatten(1).pow(2).sum(1))
    kwargs = dict(mu=2.0, mu_in=3.0, eta=0.1)
    ln_loss, _ = injflow_loss(prior, x, torch.Generator().manual_seed(4), objective="log_frobenius", **kwargs)
    fro_loss, metrics = injflow_loss(prior, x, torch.Generator().manual_seed(4), objective="frobenius", lam=2.0, **kwargs)
    common = terms["prior"] + 2.0 * terms["recon"] + 3.0 * terms["injectivity"]
    torch.testing.assert_close(ln_loss, (common + 1.5 * terms["jv_sq"].log()).mean() / 64)
    torch.testing.assert_close(fro_loss, (common + terms["jv_sq"] / 4.0).mean() / 64)
    assert set(metrics) == {"recon_mse", "jacobian", "injectivity", "latent_norm_sq"}


def test_injectivity_penalty_and_clipping_act_below_the_threshold():
    prior = _prior().double()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert injflow_terms(prior, x, torch.Generator().manual_seed(6), eta=1e-6)["injectivity"].abs().max() == 0
    with torch.no_grad():
        prior.decoder[-1].weight.mul_(1e-6)  # a nearly constant generator: tiny singular values
    terms = injflow_terms(prior, x, torch.Generator().manual_seed(6), eta=0.1)
    assert (terms["injectivity"] > 0.009).all()
    v = torch.randn(4, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(terms["jv_sq"], 0.01 * v.pow(2).sum(1))


def test_finite_difference_jvp_is_close_to_the_exact_one():
    prior = _prior().double()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    exact = injflow_terms(prior, x, torch.Generator().manual_seed(8))["jv_sq"]
    approx = injflow_terms(prior, x, torch.Generator().manual_seed(8), fd_eps=1e-5)["jv_sq"]
    torch.testing.assert_close(approx, exact, rtol=1e-3, atol=1e-6)


def test_encode_dataset_checks_its_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        encode_dataset(_prior(), torch.zeros(2, 1, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="at least one image"):
        encode_dataset(_prior(), torch.zeros(0, 1, 8, 8))


def test_penalty_weights_increase():
    assert penalty_weight(0, 1.0) == 1.0
    assert penalty_weight(1000, 1.0) == 2.0
    assert penalty_weight(1000, 1.3) > penalty_weight(1000, 1.0)


@pytest.mark.parametrize("kind, k", [("gmm", 4), ("gaussian", 1)])
def test_post_fit_density_matches_scikit_learn(kind, k):
    prior = _prior().double()
    g = torch.Generator().manual_seed(9)
    codes = torch.cat([torch.randn(150, 3, generator=g, dtype=torch.float64) * 0.3 + c for c in (-2.0, 0.0, 2.0)])
    mixture = prior.fit_latent_density(codes, kind, n_components=4, seed=0)
    assert isinstance(mixture, GaussianMixture) and mixture.n_components == k
    z = _z(20, seed=10) * 2
    torch.testing.assert_close(prior.latent_log_prob(z), torch.from_numpy(mixture.score_samples(z.numpy())), rtol=1e-9, atol=1e-9)
    assert prior.config()["n_components"] == k and prior.config()["density_kind"] == kind
    draws = prior.sample_latent(20000, 1.0, torch.Generator().manual_seed(11))
    torch.testing.assert_close(draws.mean(0), torch.from_numpy(mixture.means_.T @ mixture.weights_), rtol=0, atol=0.05)
    cold = prior.sample_latent(3, 0.0, torch.Generator().manual_seed(11))
    torch.testing.assert_close(cold, draws.new_tensor(mixture.means_.T @ mixture.weights_).expand(3, -1))


def test_post_fit_density_rejects_bad_codes():
    prior = _prior()
    with pytest.raises(ValueError, match="at least 10"):
        prior.fit_latent_density(torch.randn(5, 3), "gmm", n_components=10)
    with pytest.raises(ValueError, match="non-finite"):
        prior.fit_latent_density(torch.full((20, 3), math.inf), "gaussian")
    with pytest.raises(ValueError, match="expected shape"):
        prior.fit_latent_density(torch.randn(20, 4), "gaussian")
    with pytest.raises(ValueError, match="kind"):
        prior.fit_latent_density(torch.randn(20, 3), "flow")


def _digits(n: int = 128) -> torch.utils.data.TensorDataset:
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[:n, None] / 8.0 - 1.0, dtype=torch.float32)
    return torch.utils.data.TensorDataset(images)


OPTS = dict(steps=40, batch_size=32, lr=5e-3, checkpoint_every=10, validate_every=20, n_val=32, progress=False)


@pytest.mark.parametrize("objective", ["log_frobenius", "frobenius"])
def test_training_decreases_the_loss_and_saves_the_post_fit_prior(tmp_path, objective):
    prior = _prior()
    report = train_relaxed_flow(prior, _digits(), tmp_path, objective=objective, n_components=3, **OPTS)
    history = report["injflow"]
    assert sum(history["recon_mse"][-5:]) < 0.7 * sum(history["recon_mse"][:5])
    assert sum(history["loss"][-5:]) < sum(history["loss"][:5])
    assert history["val"][-1]["rel_error"] < history["val"][0]["rel_error"]
    assert set(report["metrics"]) == {"rel_error", "latent_nll"}
    loaded = load_prior_file(tmp_path, expected_class="RelaxedInjectiveFlow")
    assert loaded.config()["density_kind"] == "gmm" and loaded.density_means.shape == (3, 3)
    codes = encode_dataset(loaded, _digits())
    assert codes.shape == (128, 3)
    z = codes[:5]
    torch.testing.assert_close(loaded.latent_log_prob(z), prior.latent_log_prob(z), rtol=0, atol=0)
    assert loaded.metadata["options"]["objective"] == objective


def test_training_resumes_like_an_uninterrupted_run(tmp_path):
    full = _prior()
    train_relaxed_flow(full, _digits(), tmp_path / "full", density="gaussian", **{**OPTS, "steps": 20})
    killed = _prior()
    report = train_relaxed_flow(killed, _digits(), tmp_path / "killed", density="gaussian", stop_after=7, **{**OPTS, "steps": 20})
    assert not report["finished"] and not (tmp_path / "killed" / "checkpoint.safetensors").exists()
    resumed = _prior()
    train_relaxed_flow(resumed, _digits(), tmp_path / "killed", density="gaussian", resume=True, **{**OPTS, "steps": 20})
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_configurations_and_checkpoints_are_refused(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        RelaxedInjectiveFlow((1, 6, 6), 2, channels=(4, 8))
    with pytest.raises(ValueError, match="prior_std"):
        RelaxedInjectiveFlow((1, 8, 8), 2, prior_std=0.0)
    with pytest.raises(ValueError, match="data_shape"):
        RelaxedInjectiveFlow((64,), 2)
    with pytest.raises(ValueError, match="objective"):
        train_relaxed_flow(_prior(), _digits(), tmp_path, objective="frob", **OPTS)
    with pytest.raises(ValueError, match="eta"):
        train_relaxed_flow(_prior(), _digits(), tmp_path, eta=0.0, **OPTS)
    with pytest.raises(ValueError, match="objective"):
        injflow_loss(_prior(), torch.zeros(2, 1, 8, 8), None, objective="frob")
    prior = _prior()
    prior.fit_latent_density(torch.randn(50, 3), "gmm", n_components=2)
    prior.save(tmp_path / "p")
    edit_config(tmp_path / "p", lambda record: record["config"].update(n_components=10))
    with pytest.raises(CheckpointError, match="do not fit the RelaxedInjectiveFlow"):
        load_prior_file(tmp_path / "p")
