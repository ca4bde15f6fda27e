"""Noisy injective flows: the Gaussian layer's closed forms, the NIF prior, training and bad input."""

import json
import math

import pytest
import torch

from invprob.priors import NIF, GaussianNIFLayer, load_prior_file
from invprob.priors.nif import nif_loss
from invprob.training import CheckpointError, train_nif

from checkpoint_tools import edit_config


def _layer(m: int, n: int, seed: int = 0) -> GaussianNIFLayer:
    g = torch.Generator().manual_seed(seed)
    layer = GaussianNIFLayer(m, n, init_std=0.5).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n, m, generator=g, dtype=torch.float64))
        layer.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64))
        layer.raw_std.copy_(0.5 * torch.randn(n, generator=g, dtype=torch.float64))
    return layer


def _grid(m: int, half_width: float = 12.0, points: int = 601) -> tuple[torch.Tensor, float]:
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    mesh = torch.stack(torch.meshgrid(*([axis] * m), indexing="ij"), -1).reshape(-1, m)
    return mesh, float(axis[1] - axis[0]) ** m


def _quadrature(layer: GaussianNIFLayer, x: torch.Tensor, with_prior: bool) -> torch.Tensor:
    """``log int p(x|z) [N(z; 0, I)] dz`` on a grid, one value per row of ``x``."""
    z, cell = _grid(layer.in_dim)
    values = []
    for row in x:
        log_f = layer.conditional_log_prob(row.expand(len(z), -1), z)
        if with_prior:
            log_f = log_f - 0.5 * (z.pow(2).sum(1) + layer.in_dim * math.log(2 * math.pi))
        values.append(torch.logsumexp(log_f, 0) + math.log(cell))
    return torch.stack(values)


@pytest.mark.parametrize("m, n", [(1, 3), (2, 4)])
def test_manifold_term_and_marginal_match_numerical_integration(m, n):
    layer = _layer(m, n)
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer.manifold_term(x), _quadrature(layer, x, False), rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(layer.marginal_log_prob(x), _quadrature(layer, x, True), rtol=1e-7, atol=1e-7)


def test_marginal_is_the_gaussian_with_covariance_aat_plus_sigma():
    layer = _layer(5, 12)
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        cov = layer.weight @ layer.weight.T + torch.diag(layer.std**2)
        expected = torch.distributions.MultivariateNormal(layer.bias, cov).log_prob(x)
        torch.testing.assert_close(layer.marginal_log_prob(x), expected, rtol=1e-10, atol=1e-10)


def test_stochastic_inverse_mean_is_the_weighted_least_squares_solution():
    layer = _layer(3, 10)
    x = torch.randn(5, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        whitened_a = layer.weight / layer.std[:, None]
        target = ((x - layer.bias) / layer.std).T
        expected = torch.linalg.lstsq(whitened_a, target).solution.T
        torch.testing.assert_close(layer.inverse_mean(x), expected, rtol=1e-10, atol=1e-10)
        z = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        torch.testing.assert_close(layer.inverse_mean(layer(z)), z, rtol=1e-10, atol=1e-10)


def test_stochastic_inverse_is_the_normalised_likelihood_and_samples_have_its_covariance():
    layer = _layer(2, 6)
    x = torch.randn(1, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = torch.randn(7, 1, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with torch.no_grad():
        # eq. 6: q(z|x) = p(x|z) / int p(x|z') dz'
        torch.testing.assert_close(
            layer.inverse_log_prob(z, x), layer.conditional_log_prob(x, z) - layer.manifold_term(x), rtol=1e-10, atol=1e-10
        )
        precision = layer.weight.T @ torch.diag(layer.std**-2) @ layer.weight
        for s in (1.0, 0.25):
            draws = layer.inverse_sample(x, 20000, torch.Generator().manual_seed(7), s=s)[:, 0]
            torch.testing.assert_close(draws.mean(0), layer.inverse_mean(x)[0], rtol=0, atol=0.05 * math.sqrt(s))
            torch.testing.assert_close(torch.cov(draws.T), s * torch.linalg.inv(precision), rtol=0.05, atol=1e-3)


def test_layer_elbo_is_below_the_marginal():
    layer = _layer(3, 8)
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with torch.no_grad():
        mean = layer.inverse_mean(x)
        precision = layer.weight.T @ torch.diag(layer.std**-2) @ layer.weight
        expected_log_prior = -0.5 * (mean.pow(2).sum(1) + torch.linalg.inv(precision).trace() + 3 * math.log(2 * math.pi))
        elbo = expected_log_prior + layer.manifold_term(x)  # eq. 7 in closed form for p_z = N(0, I)
        assert (elbo < layer.marginal_log_prob(x)).all()


def _gaussian_nif() -> NIF:
    """A NIF whose only flow is an actnorm: its log p(x) is available in closed form (eq. 41)."""
    torch.manual_seed(0)
    prior = NIF((1, 4, 4), 2, n_scales=0, n_steps=0, n_latent_steps=0, init_std=0.7).double()
    with torch.no_grad():
        prior.layer.weight.mul_(2.0)
        prior.image_flow.layers[0].log_scale.fill_(0.3)
        prior.image_flow.layers[0].initialized.fill_(True)
    return prior.eval()


def test_nif_bound_and_importance_estimate_against_the_exact_log_likelihood():
    prior = _gaussian_nif()
    x = prior.sample(4, generator=torch.Generator().manual_seed(1), s=1.0)
    with torch.no_grad():
        x_prime, logdet = prior.to_manifold_space(x)
        exact = prior.layer.marginal_log_prob(x_prime) - logdet
        bound = prior.log_prob(x)
        estimate = prior.log_prob(x, n_samples=4000, generator=torch.Generator().manual_seed(2))
        elbo_many = prior.elbo(x, 4000, torch.Generator().manual_seed(3))
    assert (elbo_many < exact).all()
    assert ((bound - elbo_many).abs() < 0.5).all()  # the default bound: 8 draws of the same expectation
    assert ((exact - estimate).abs() < 0.02).all()
    assert ((exact - estimate).abs() < (exact - elbo_many)).all()


def test_nif_log_prob_is_deterministic_and_sample_scale_controls_the_distance_to_the_manifold():
    prior = _gaussian_nif()
    x = prior.sample(3, generator=torch.Generator().manual_seed(4), s=1.0)
    torch.testing.assert_close(prior.log_prob(x), prior.log_prob(x), rtol=0, atol=0)
    on = prior.sample(3, generator=torch.Generator().manual_seed(4), s=0.0)
    torch.testing.assert_close(prior.project(on), on, rtol=1e-10, atol=1e-10)
    assert (prior.project(x) - x).abs().max() > 1e-2
    with pytest.raises(ValueError, match="s: expected"):
        prior.sample(2, s=-1.0)
    with pytest.raises(ValueError, match="n_samples"):
        prior.log_prob(x, n_samples=0)


def _digits(n: int = 128) -> torch.utils.data.TensorDataset:
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[:n, None] / 8.0 - 1.0, dtype=torch.float32)
    return torch.utils.data.TensorDataset(images)


def _tiny_nif() -> NIF:
    torch.manual_seed(0)
    return NIF((1, 8, 8), 4, n_scales=1, n_steps=1, hidden=8, unet_depth=0, n_latent_steps=2, latent_hidden=16)


OPTS = dict(steps=40, batch_size=32, lr=5e-3, checkpoint_every=10, validate_every=20, n_val=32, progress=False)


def test_train_nif_decreases_the_loss_resumes_and_saves_a_loadable_prior(tmp_path):
    full = _tiny_nif()
    report = train_nif(full, _digits(), tmp_path / "full", **OPTS)
    history = report["nif"]
    assert report["finished"] and sum(history["loss"][-5:]) < sum(history["loss"][:5]) - 0.1
    assert history["val"][-1]["bits_per_dim"] < history["val"][0]["bits_per_dim"]
    killed = _tiny_nif()
    assert not train_nif(killed, _digits(), tmp_path / "killed", stop_after=15, **OPTS)["finished"]
    assert not (tmp_path / "killed" / "checkpoint.safetensors").exists()
    resumed = _tiny_nif()
    train_nif(resumed, _digits(), tmp_path / "killed", resume=True, **OPTS)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    loaded = load_prior_file(tmp_path / "full", expected_class="NIF")
    x = _digits(4).tensors[0]
    torch.testing.assert_close(loaded.log_prob(x), full.log_prob(x), rtol=0, atol=0)
    assert loaded.metadata["trainer"] == "train_nif"


def test_nif_loss_is_the_negative_bound_per_dimension():
    prior = _tiny_nif().double()
    x = _digits(6).tensors[0].double()
    loss, metrics = nif_loss(prior, x, torch.Generator().manual_seed(0), n_samples=3)
    expected = -prior.elbo(x, 3, torch.Generator().manual_seed(0)).mean() / 64
    torch.testing.assert_close(loss, expected)
    assert set(metrics) == {"manifold", "latent", "logdet", "noise_std"}


def test_bad_configurations_and_checkpoints_are_refused(tmp_path):
    with pytest.raises(ValueError, match="in_dim"):
        GaussianNIFLayer(5, 4)
    with pytest.raises(ValueError, match="min_std"):
        GaussianNIFLayer(2, 4, init_std=1e-3, min_std=1e-2)
    with pytest.raises(ValueError, match="n_scales"):
        NIF((1, 6, 6), 2, n_scales=2)
    with pytest.raises(ValueError, match="latent_dim"):
        NIF((1, 4, 4), 17)
    with pytest.raises(ValueError, match="n_samples"):
        train_nif(_tiny_nif(), _digits(), tmp_path, n_samples=0, **OPTS)
    with pytest.raises(TypeError, match="expected a NIF"):
        train_nif(torch.nn.Linear(2, 2), _digits(), tmp_path, **OPTS)
    prior = _tiny_nif()
    prior.save(tmp_path / "p")
    edit_config(tmp_path / "p", lambda record: record["config"].update(latent_dim=5))
    with pytest.raises(CheckpointError, match="do not fit the NIF"):
        load_prior_file(tmp_path / "p")
