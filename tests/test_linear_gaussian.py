"""LinearGaussianPrior: the closed-form reference prior, and its exact posterior."""

import math

import numpy as np
import pytest
import torch

from invprob.operators import BlockMask, RandomGaussian
from invprob.priors import LinearGaussianPrior, load_prior_file, save_prior

SHAPE = (1, 4, 4)
N, D = 16, 4


def _prior(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, D, generator=g, dtype=dtype)
    b = torch.randn(N, generator=g, dtype=dtype)
    return LinearGaussianPrior(W, b, data_shape=SHAPE)


def test_decode_encode_project_roundtrip():
    prior = _prior()
    z = torch.randn(5, D, dtype=torch.float64)
    x = prior.decode(z)
    assert x.shape == (5, *SHAPE)
    torch.testing.assert_close(prior.encode(x), z)
    torch.testing.assert_close(prior.project(x), x)


def test_project_is_orthogonal_projection_onto_affine_range():
    prior = _prior()
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    p = prior.project(x)
    torch.testing.assert_close(prior.project(p), p)
    residual = (x - p).flatten(1)
    torch.testing.assert_close(residual @ prior.W, torch.zeros(3, D, dtype=torch.float64), atol=1e-10, rtol=0)


def test_log_prob_matches_volume_density_on_range():
    prior = _prior()
    z = torch.randn(4, D, dtype=torch.float64)
    W = prior.W
    expected = -0.5 * z.pow(2).sum(1) - 0.5 * D * math.log(2 * math.pi) - 0.5 * torch.logdet(W.T @ W)
    torch.testing.assert_close(prior.log_prob(prior.decode(z)), expected)


def test_log_prob_with_orthonormal_columns_is_latent_density():
    q = torch.linalg.qr(torch.randn(N, D, dtype=torch.float64))[0]
    prior = LinearGaussianPrior(q)
    z = torch.randn(3, D, dtype=torch.float64)
    torch.testing.assert_close(prior.log_prob(prior.decode(z)), prior.latent_log_prob(z))


def test_sample_has_prior_covariance():
    prior = _prior()
    g = torch.Generator().manual_seed(1)
    x = prior.sample(20000, generator=g).flatten(1)
    cov = torch.cov(x.T)
    err = (cov - prior.covariance()).norm() / prior.covariance().norm()
    assert err < 0.05
    g2 = torch.Generator().manual_seed(1)
    torch.testing.assert_close(prior.sample(3, generator=g2), prior.sample(3, generator=torch.Generator().manual_seed(1)))


def test_shapes_only_construction_and_checkpoint_roundtrip(tmp_path):
    prior = _prior(torch.float32)
    save_prior(prior, tmp_path / "lg")
    loaded = load_prior_file(tmp_path / "lg")
    assert isinstance(loaded, LinearGaussianPrior)
    assert loaded.data_shape == SHAPE and loaded.latent_dim == D
    torch.testing.assert_close(loaded.W, prior.W)
    torch.testing.assert_close(loaded.b, prior.b)
    assert prior.config() == {"data_shape": list(SHAPE), "latent_dim": D}


def test_accepts_numpy_and_defaults():
    prior = LinearGaussianPrior(np.eye(6, 2))
    assert prior.data_shape == (6,) and prior.dtype == torch.float64
    torch.testing.assert_close(prior.b, torch.zeros(6, dtype=torch.float64))
    assert not prior.W.requires_grad


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(W=torch.ones(5, 2)), "full column rank"),
        (dict(W=torch.randn(3, 5)), "injective"),
        (dict(W=torch.randn(5)), "matrix"),
        (dict(W=torch.randn(6, 2), data_shape=(1, 2, 2)), "data_shape"),
        (dict(W=torch.randn(6, 2), b=torch.zeros(5)), "b: expected 6"),
        (dict(W=torch.randn(6, 2), latent_dim=3), "latent_dim"),
        (dict(W=torch.full((6, 2), float("nan"))), "non-finite"),
        (dict(data_shape=(4,)), "give W"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LinearGaussianPrior(**kwargs)


def _brute_force_posterior(prior, op, y, sigma):
    """Condition the joint Gaussian of (x, y) on y, with A as a dense matrix."""
    A = op(torch.eye(N, dtype=torch.float64).reshape(N, *SHAPE)).flatten(1).T
    W, b = prior.W, prior.b
    cov_x = W @ W.T
    cov_y = A @ cov_x @ A.T + sigma**2 * torch.eye(A.shape[0], dtype=torch.float64)
    cov_xy = cov_x @ A.T
    gain = cov_xy @ torch.linalg.inv(cov_y)
    mean = b + (y.flatten() - A @ b) @ gain.T
    cov = cov_x - gain @ cov_xy.T
    return mean, cov


@pytest.mark.parametrize("make_op", [lambda: RandomGaussian(SHAPE, m=6, seed=2), lambda: BlockMask(SHAPE, size=2)])
def test_exact_posterior_matches_brute_force_conditioning(make_op):
    prior, op = _prior(), make_op()
    x = prior.sample(2, generator=torch.Generator().manual_seed(3))
    y = op(x) + 0.05 * torch.randn(2, *op.out_shape, dtype=torch.float64)
    sigmas = torch.tensor([0.05, 0.2], dtype=torch.float64)
    post = prior.exact_posterior(op, y, sigmas)
    for i in range(2):
        mean, cov = _brute_force_posterior(prior, op, y[i], float(sigmas[i]))
        torch.testing.assert_close(post.mean[i].flatten(), mean)
        torch.testing.assert_close(post.cov[i], cov, atol=1e-10, rtol=1e-7)
    torch.testing.assert_close(post.mean, prior.decode(post.latent_mean))
    torch.testing.assert_close(post.std.flatten(1), torch.diagonal(post.cov, dim1=1, dim2=2).sqrt())


def test_exact_posterior_single_numpy_measurement():
    prior, op = _prior(), RandomGaussian(SHAPE, m=6, seed=2)
    y = op(prior.sample(1))[0]
    batched = prior.exact_posterior(op, y[None], 0.1)
    single = prior.exact_posterior(op, y.numpy(), 0.1)
    torch.testing.assert_close(single.mean, batched.mean)


def test_exact_posterior_concentrates_as_noise_vanishes():
    prior, op = _prior(), RandomGaussian(SHAPE, m=8, seed=2)
    x = prior.sample(1, generator=torch.Generator().manual_seed(4))
    post = prior.exact_posterior(op, op(x), 1e-6)
    torch.testing.assert_close(post.mean, x, atol=1e-6, rtol=0)
    assert float(post.std.max()) < 1e-5


@pytest.mark.parametrize(
    "args, match",
    [
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=[0.1, 0.2, 0.3]), "sigma"),
        (dict(y=torch.zeros(2, 5)), "y: expected shape"),
        (dict(y=torch.full((1, 6), float("nan"))), "non-finite"),
    ],
)
def test_exact_posterior_bad_inputs(args, match):
    prior, op = _prior(), RandomGaussian(SHAPE, m=6, seed=2)
    kwargs = dict(y=torch.zeros(2, 6, dtype=torch.float64), sigma=0.1) | args
    with pytest.raises(ValueError, match=match):
        prior.exact_posterior(op, kwargs["y"], kwargs["sigma"])


def test_exact_posterior_rejects_mismatched_operator():
    with pytest.raises(ValueError, match="data_shape"):
        _prior().exact_posterior(RandomGaussian((1, 5, 5), m=6), torch.zeros(1, 6), 0.1)
