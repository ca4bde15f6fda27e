"""Posterior samplers against the closed-form posterior of a linear-Gaussian prior.

Problem: ``x = W z`` with ``W`` a random injective ``16 x 4`` matrix (images ``1 x 4 x 4``),
``y = A x + N(0, sigma^2 I)`` for each linear operator type. Tolerances (stated once here):
posterior mean error < 5 % of the posterior's RMS size ``sqrt(||mu||^2 + tr Sigma)``, covariance
relative Frobenius error < 10 % (``MEAN_TOL``, ``COV_TOL``), estimated from a few thousand samples.
ULA is checked against its own exact stationary covariance ``W (P (I - eta P / 2))^{-1} W^T``;
MALA against the posterior itself. Ambient VI uses a square, well-conditioned ``W`` (it needs a
density in image space).
"""

from __future__ import annotations

import pytest
import torch

from invprob.checkpoint import CheckpointError
from invprob.operators import BlockMask, Identity, RandomGaussian, RandomMask, SuperResolution, add_noise
from invprob.priors import LinearGaussianPrior
from invprob.priors.layers import AffineCoupling, ConditionalAffine, LULinear
from invprob.solvers import AmortizedPosterior, FlowPosterior, SolverDiverged, list_methods, solve
from invprob.training import train_amortized
from invprob.solvers import driver
from invprob.solvers._posterior import data_fit
from invprob.solvers.chain_stats import RunningMoments, effective_sample_size
from invprob.solvers.pregenerator import PreGenerator
from invprob.solvers.variational import PlateauRule

MEAN_TOL = 0.05
COV_TOL = 0.10
SHAPE = (1, 4, 4)
LATENT = 4
SIGMA = 0.3

OPERATORS = {
    "gaussian": lambda: RandomGaussian(SHAPE, 8, seed=1),
    "random-mask": lambda: RandomMask(SHAPE, 0.5, seed=2),
    "block-mask": lambda: BlockMask(SHAPE, 2),
    "superres": lambda: SuperResolution(SHAPE, 2),
    "identity": lambda: Identity(SHAPE),
}


def make_prior(latent: int = LATENT, seed: int = 0) -> LinearGaussianPrior:
    g = torch.Generator().manual_seed(seed)
    return LinearGaussianPrior(torch.randn(16, latent, generator=g) / 2, data_shape=SHAPE)


def full_rank_prior(seed: int = 0) -> LinearGaussianPrior:
    """A square, well-conditioned ``W = Q diag(0.5 .. 1.5)``: a non-degenerate Gaussian prior on images."""
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(seed)))
    return LinearGaussianPrior(q * torch.linspace(0.5, 1.5, 16), data_shape=SHAPE)


def measure(prior: LinearGaussianPrior, op, n: int = 1, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = prior.sample(n, generator=g)
    y = op(x)
    return y + SIGMA * torch.randn(y.shape, generator=g)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def check_moments(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, mean_tol=MEAN_TOL, cov_tol=COV_TOL):
    """Mean error relative to the posterior's RMS size ``sqrt(E||X||^2) = sqrt(||mu||^2 + tr Sigma)``
    (``||mu||`` alone is tiny when ``y`` says little, e.g. 2x super-resolution of a 4x4 image);
    covariance error relative in the Frobenius norm."""
    flat = samples.flatten(1).double()
    mu = mean.flatten().double()
    scale = float((mu.pow(2).sum() + torch.trace(cov.double())).sqrt())
    mean_err = float((flat.mean(0) - mu).norm()) / scale
    cov_err = rel(torch.cov(flat.T), cov.double())
    assert mean_err < mean_tol, f"posterior mean relative error {mean_err:.3f} >= {mean_tol}"
    assert cov_err < cov_tol, f"posterior covariance relative error {cov_err:.3f} >= {cov_tol}"


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SVI_FAST = dict(sigma=SIGMA, steps=400, lr=1e-2, batch_size=64, n_layers=2, hidden=32, n_samples=4000)
MALA_FAST = dict(
    sigma=SIGMA, adjusted=True, step_size=0.01, target_acceptance=0.6, n_chains=200, n_samples=40, burn_in=200, thin=3
)
PL_FAST = dict(sigma=SIGMA, perturb_std=0.15, resample_prob=0.2, n_chains=300, n_samples=40, burn_in=300, thin=8)


# ---------------------------------------------------------------- the pre-generator flow


@pytest.mark.parametrize("context_in", [0, 5])
def test_pregenerator_log_det_is_exact(context_in):
    flow = PreGenerator(3, n_layers=2, hidden=8, context_in=context_in, context_dim=4, generator=seeded()).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=seeded(7), dtype=p.dtype))
    eps = torch.randn(1, 3, dtype=torch.float64)
    ctx = torch.randn(1, context_in, dtype=torch.float64) if context_in else None
    _, log_det = flow(eps, ctx)
    jac = torch.autograd.functional.jacobian(lambda e: flow(e.unsqueeze(0), ctx)[0][0], eps[0])
    assert float(log_det.detach()) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-10)


def test_pregenerator_starts_as_identity_and_is_seeded():
    flow = PreGenerator(4, generator=seeded())
    eps = torch.randn(8, 4)
    z, log_det = flow(eps)
    assert torch.equal(z, eps) and torch.equal(log_det, torch.zeros(8))
    a = PreGenerator(4, generator=seeded(1)).state_dict()
    b = PreGenerator(4, generator=seeded(1)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pregenerator_context_shape_is_checked():
    flow = PreGenerator(2, context_in=3)
    with pytest.raises(ValueError, match="context"):
        flow(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="unconditional"):
        PreGenerator(2)(torch.zeros(4, 2), torch.zeros(4, 3))


def test_pregenerator_sample_count_is_checked():
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        PreGenerator(2).sample(0)


def test_data_fit_refuses_measurements_that_would_broadcast():
    op = Identity((3,))
    with pytest.raises(ValueError, match="expected 1 or 2 measurements"):
        data_fit(op, torch.zeros(2, 3), torch.zeros(4, 3), 1.0)
    assert data_fit(op, torch.zeros(2, 3), torch.ones(1, 3), 1.0).tolist() == [1.5, 1.5]


# ---------------------------------------------------------------- accuracy against the exact posterior


@pytest.mark.parametrize("op_name", sorted(OPERATORS))
def test_svi_matches_exact_posterior(op_name):
    prior, op = make_prior(), OPERATORS[op_name]()
    y = measure(prior, op)
    exact = prior.exact_posterior(op, y, SIGMA)
    result = solve(op, prior, y, "svi", generator=seeded(), **SVI_FAST)
    check_moments(result.samples[0], exact.mean[0], exact.cov[0])


def test_warm_started_svi_matches_exact_posterior():
    """Started at N(f^dagger(x_init), I) far from the posterior, the fit still reaches it."""
    prior, op = make_prior(), OPERATORS["gaussian"]()
    y = measure(prior, op)
    exact = prior.exact_posterior(op, y, SIGMA)
    far = prior.decode(torch.full((1, LATENT), 3.0))
    result = solve(op, prior, y, "svi", generator=seeded(), x_init=far, start="x_init", **SVI_FAST)
    check_moments(result.samples[0], exact.mean[0], exact.cov[0])


@pytest.mark.parametrize("method", ["svi", "ambient-vi"])
def test_vi_start_x_init_centres_the_flow_on_its_coordinates(method):
    prior, op = full_rank_prior(), OPERATORS["identity"]()
    y = measure(prior, op, n=2)
    x0 = prior.sample(2, generator=seeded(9))
    opts = dict(TINY[method], steps=1, lr=1e-9, n_samples=2000)
    result = solve(op, prior, y, method, generator=seeded(), x_init=x0, start="x_init", start_scale=0.5, **opts)
    centre = prior.encode(x0) if method == "svi" else x0.flatten(1)
    for b, posterior in enumerate(result.extras["posterior"]):
        torch.testing.assert_close(posterior.centre, centre[b])
        with torch.no_grad():
            draws, log_q = posterior.draw(2000, seeded(1))
        assert float((draws.mean(0) - centre[b]).abs().max()) < 0.05  # N(c, 0.5^2 I): the mean of 2000 draws
        torch.testing.assert_close(draws.std(0), torch.full_like(draws[0], 0.5), atol=0.05, rtol=0)
        exact = torch.distributions.Normal(centre[b], 0.5).log_prob(draws).sum(1)  # log q of the shifted, scaled flow
        torch.testing.assert_close(log_q, exact, atol=1e-3, rtol=1e-4)
    cold = solve(op, prior, y, method, generator=seeded(), x_init=x0, **opts)  # start="prior": x_init unused
    assert all(p.centre is None for p in cold.extras["posterior"])
    with pytest.raises(ValueError, match=r"x_init: start='x_init' needs one image per measurement, shape \(2, 1, 4, 4\), got None"):
        solve(op, prior, y, method, start="x_init", **opts)
    with pytest.raises(ValueError, match="start_scale"):
        solve(op, prior, y, method, x_init=x0, start="x_init", start_scale=0.0, **opts)
    with pytest.raises(ValueError, match="x_init: expected 2 start"):
        solve(op, prior, y, method, x_init=x0[:1], start="x_init", **opts)


@pytest.mark.parametrize("op_name", sorted(OPERATORS))
def test_mala_matches_exact_posterior(op_name):
    prior, op = make_prior(), OPERATORS[op_name]()
    y = measure(prior, op)
    exact = prior.exact_posterior(op, y, SIGMA)
    result = solve(op, prior, y, "langevin", generator=seeded(), **MALA_FAST)
    check_moments(result.samples[0], exact.mean[0], exact.cov[0])
    assert 0.4 < float(result.extras["acceptance_rate"][0]) < 0.8


@pytest.mark.parametrize("op_name", sorted(OPERATORS))
def test_pl_mcmc_matches_exact_posterior(op_name):
    prior, op = make_prior(), OPERATORS[op_name]()
    y = measure(prior, op)
    exact = prior.exact_posterior(op, y, SIGMA)
    result = solve(op, prior, y, "pl-mcmc", generator=seeded(), **PL_FAST)
    check_moments(result.samples[0], exact.mean[0], exact.cov[0])
    assert 0.0 < float(result.extras["acceptance_rate"][0]) < 1.0


def test_ula_matches_its_exact_stationary_law():
    """ULA on a Gaussian target keeps the mean and inflates the covariance to (P (I - eta P/2))^{-1}."""
    prior, op = make_prior(), OPERATORS["gaussian"]()
    y = measure(prior, op)
    exact = prior.exact_posterior(op, y, SIGMA)
    eta = 0.01
    precision = torch.linalg.inv(exact.latent_cov[0].double())
    ula_latent = torch.linalg.inv(precision @ (torch.eye(LATENT, dtype=torch.float64) - eta * precision / 2))
    W = prior.W.double()
    opts = dict(MALA_FAST, adjusted=False, target_acceptance=None, step_size=eta)
    result = solve(op, prior, y, "langevin", generator=seeded(), **opts)
    check_moments(result.samples[0], exact.mean[0], W @ ula_latent @ W.T)
    assert float(rel(W @ ula_latent @ W.T, exact.cov[0].double())) > 0.1  # the bias being accounted for is real
    assert torch.equal(result.extras["acceptance_rate"], torch.ones(1))


@pytest.mark.parametrize("op_name", ["gaussian", "random-mask"])
def test_ambient_vi_matches_exact_posterior(op_name):
    """Ambient VI needs a density in image space: a square W makes the prior a full Gaussian."""
    prior, op = full_rank_prior(), OPERATORS[op_name]()
    y = measure(prior, op)
    exact = prior.exact_posterior(op, y, SIGMA)
    opts = dict(SVI_FAST, steps=600, n_layers=1)
    result = solve(op, prior, y, "ambient-vi", generator=seeded(), **opts)
    check_moments(result.samples[0], exact.mean[0], exact.cov[0])


@pytest.fixture(scope="module")
def amortized():
    prior, op = make_prior(), OPERATORS["gaussian"]()
    model = train_amortized(
        op, prior, sigma=SIGMA, steps=800, lr=1e-2, batch_size=128, n_layers=2, hidden=32, generator=seeded(5)
    )
    return prior, op, model


def test_avi_on_held_out_measurements(amortized):
    prior, op, model = amortized
    y = measure(prior, op, n=3, seed=11)
    exact = prior.exact_posterior(op, y, SIGMA)
    result = solve(op, prior, y, "avi", amortized=model, n_samples=4000, generator=seeded())
    for i in range(3):
        check_moments(result.samples[i], exact.mean[i], exact.cov[i])
    assert len(model.history["loss"]) == 800


def test_avi_save_load_round_trip(amortized, tmp_path):
    prior, op, model = amortized
    model.save(tmp_path / "avi")
    loaded = AmortizedPosterior.load(tmp_path / "avi")
    y = measure(prior, op, n=2, seed=12)
    a = solve(op, prior, y, "avi", amortized=model, n_samples=5, generator=seeded())
    b = solve(op, prior, y, "avi", amortized=loaded, n_samples=5, generator=seeded())
    assert torch.equal(a.samples, b.samples)
    assert loaded.sigma == SIGMA and loaded.history["loss"] == model.history["loss"]
    (tmp_path / "other").mkdir()
    prior.save(str(tmp_path / "other"))
    with pytest.raises(CheckpointError, match="not an amortized posterior"):
        AmortizedPosterior.load(tmp_path / "other")


def test_avi_rejects_another_operator_shape(amortized):
    prior, _, model = amortized
    other = RandomGaussian(SHAPE, 6, seed=1)
    with pytest.raises(ValueError, match="trained for an operator"):
        solve(other, prior, measure(prior, other), "avi", amortized=model)
    with pytest.raises(ValueError, match="latent_dim"):
        solve(OPERATORS["gaussian"](), make_prior(latent=5), torch.zeros(8), "avi", amortized=model)


def test_avi_trains_from_a_dataset():
    prior, op = make_prior(), OPERATORS["identity"]()
    data = prior.sample(64, generator=seeded())
    model = train_amortized(op, prior, data=data, sigma=SIGMA, steps=3, generator=seeded())
    assert len(model.history["loss"]) == 3
    with pytest.raises(ValueError, match="data"):
        train_amortized(op, prior, data=torch.zeros(4, 16), sigma=SIGMA, steps=1)


# ---------------------------------------------------------------- results, determinism


TINY = {
    "svi": dict(sigma=SIGMA, steps=3, n_samples=5, n_layers=1, hidden=8),
    "ambient-vi": dict(sigma=SIGMA, steps=3, n_samples=5, n_layers=1, hidden=8),
    "langevin": dict(sigma=SIGMA, n_chains=2, n_samples=5, burn_in=3, step_size=0.01, adjusted=True),
    "pl-mcmc": dict(sigma=SIGMA, n_chains=2, n_samples=5, burn_in=3),
}


@pytest.mark.parametrize("method", sorted(TINY))
def test_result_shapes_and_seeded_determinism(method):
    prior, op = make_prior(), OPERATORS["random-mask"]()
    y = measure(prior, op, n=2)
    a = solve(op, prior, y, method, generator=seeded(4), **TINY[method])
    b = solve(op, prior, y, method, generator=seeded(4), **TINY[method])
    c = solve(op, prior, y, method, generator=seeded(5), **TINY[method])
    assert a.samples.shape == (2, 10 if method in ("langevin", "pl-mcmc") else 5, *SHAPE)
    assert a.mean.shape == a.std.shape == a.x_hat.shape == (2, *SHAPE)
    assert torch.equal(a.x_hat, a.mean)
    torch.testing.assert_close(a.mean, a.samples.mean(1))
    torch.testing.assert_close(a.std, a.samples.std(1))
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)
    single = solve(op, prior, y[0], method, generator=seeded(4), **TINY[method])
    assert single.samples.shape == a.samples.shape[1:] and single.x_hat.shape == SHAPE


def test_vi_keeps_the_trained_flow_for_more_samples():
    prior, op = make_prior(), OPERATORS["identity"]()
    result = solve(op, prior, measure(prior, op, n=2), "svi", generator=seeded(), **TINY["svi"])
    posteriors = result.extras["posterior"]
    assert len(posteriors) == 2 and all(isinstance(p, FlowPosterior) for p in posteriors)
    assert posteriors[0].sample(7, generator=seeded()).shape == (7, *SHAPE)
    assert len(result.history["loss"]) == 3


def test_chains_without_stored_samples_give_the_same_moments():
    prior, op = make_prior(), OPERATORS["superres"]()
    y = measure(prior, op)
    kept = solve(op, prior, y, "langevin", generator=seeded(), **TINY["langevin"])
    streamed = solve(op, prior, y, "langevin", generator=seeded(), keep_samples=False, **TINY["langevin"])
    assert streamed.samples is None and "ess" not in streamed.extras
    torch.testing.assert_close(streamed.mean, kept.mean)
    torch.testing.assert_close(streamed.std, kept.std)
    assert kept.extras["ess"].shape == (1, *SHAPE)
    assert kept.extras["step_size"].shape == (1, 2)


def test_mala_adapts_its_step_towards_the_target_rate():
    prior, op = make_prior(), OPERATORS["gaussian"]()
    y = measure(prior, op)
    opts = dict(MALA_FAST, step_size=1.0, n_chains=20, n_samples=20)
    result = solve(op, prior, y, "langevin", generator=seeded(), **opts)
    assert float(result.extras["step_size"].max()) < 0.2
    assert 0.4 < float(result.extras["acceptance_rate"][0]) < 0.8


def test_chains_start_from_x_init():
    prior, op = make_prior(), OPERATORS["identity"]()
    y = measure(prior, op)
    x0 = prior.sample(1, generator=seeded(9))
    seen = []
    opts = dict(TINY["pl-mcmc"], burn_in=0, n_samples=1, perturb_std=1e-6, resample_prob=0.0)
    solve(op, prior, y, "pl-mcmc", x_init=x0, generator=seeded(), callback=lambda t, x, info: seen.append(x), **opts)
    torch.testing.assert_close(seen[0], x0, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="x_init"):
        solve(op, prior, measure(prior, op, n=2), "pl-mcmc", x_init=x0, **opts)


# ---------------------------------------------------------------- bad input and divergence


class NoLatentDensity(LinearGaussianPrior):
    def _latent_log_prob(self, z):
        raise NotImplementedError


class NoImageDensity(LinearGaussianPrior):
    def _log_prob(self, x):
        raise NotImplementedError


class BrokenDensity(LinearGaussianPrior):
    def _latent_log_prob(self, z):
        return torch.full((z.shape[0],), float("nan"), dtype=z.dtype)


@pytest.mark.parametrize("method", sorted(TINY))
@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sigma_is_rejected(method, sigma):
    prior, op = make_prior(), OPERATORS["identity"]()
    with pytest.raises(ValueError, match="sigma"):
        solve(op, prior, measure(prior, op), method, **dict(TINY[method], sigma=sigma))


@pytest.mark.parametrize("method", sorted(TINY))
def test_zero_samples_and_non_finite_y_are_rejected(method):
    prior, op = make_prior(), OPERATORS["identity"]()
    y = measure(prior, op)
    with pytest.raises(ValueError, match="n_samples"):
        solve(op, prior, y, method, **dict(TINY[method], n_samples=0))
    y[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        solve(op, prior, y, method, **TINY[method])


def test_negative_beta_and_bad_amortized_options_are_rejected(amortized):
    prior, op, model = amortized
    y = measure(prior, op)
    for method in ("svi", "ambient-vi"):
        with pytest.raises(ValueError, match="beta"):
            solve(op, prior, y, method, **dict(TINY[method], beta=-0.1))
    with pytest.raises(ValueError, match="beta"):
        train_amortized(op, prior, sigma=SIGMA, beta=-1.0)
    with pytest.raises(ValueError, match="sigma"):
        train_amortized(op, prior, sigma=0.0)
    with pytest.raises(ValueError, match="n_samples"):
        solve(op, prior, y, "avi", amortized=model, n_samples=0)
    with pytest.raises(ValueError, match="amortized"):
        solve(op, prior, y, "avi", amortized="model.safetensors")
    with pytest.raises(ValueError, match="target_acceptance"):
        solve(op, prior, y, "langevin", **dict(TINY["langevin"], adjusted=False, target_acceptance=0.5))


@pytest.mark.parametrize("method", ["svi", "langevin", "pl-mcmc"])
def test_latent_samplers_need_a_latent_density(method):
    W = make_prior().W
    prior, op = NoLatentDensity(W, data_shape=SHAPE), OPERATORS["identity"]()
    with pytest.raises(TypeError, match="latent_log_prob"):
        solve(op, prior, torch.zeros(SHAPE), method, **TINY[method])
    with pytest.raises(TypeError, match="latent_log_prob"):
        train_amortized(op, prior, sigma=SIGMA, steps=1)


def test_ambient_vi_needs_an_image_density():
    prior, op = NoImageDensity(make_prior().W, data_shape=SHAPE), OPERATORS["identity"]()
    with pytest.raises(TypeError, match="log_prob"):
        solve(op, prior, torch.zeros(SHAPE), "ambient-vi", **TINY["ambient-vi"])


@pytest.mark.parametrize("method", ["svi", "pl-mcmc", "langevin"])
def test_non_finite_posterior_stops_with_a_clear_error(method):
    prior, op = BrokenDensity(make_prior().W, data_shape=SHAPE), OPERATORS["identity"]()
    with pytest.raises(SolverDiverged, match=method):
        solve(op, prior, torch.zeros(SHAPE), method, **TINY[method])


def test_ula_with_a_too_large_step_diverges_with_a_clear_error():
    prior, op = make_prior(), OPERATORS["identity"]()
    opts = dict(sigma=0.01, step_size=10.0, n_chains=2, n_samples=5, burn_in=200, adjusted=False)
    with pytest.raises(SolverDiverged, match="step_size"):
        solve(op, prior, measure(prior, op), "langevin", **opts)


def test_langevin_defaults_are_mala_adapting_its_step_so_a_too_large_step_does_not_diverge():
    prior, op = make_prior(), OPERATORS["identity"]()
    result = solve(op, prior, measure(prior, op), "langevin", sigma=0.01, step_size=10.0, n_chains=2, n_samples=5,
                   burn_in=200, generator=seeded())
    assert bool(torch.isfinite(result.samples).all())
    assert float(result.extras["step_size"].max()) < 1.0, "the adaptation shrank the step"


# ---------------------------------------------------------------- every prior family


def _family_names() -> list[str]:
    from prior_registry import PRIOR_FACTORIES

    return sorted(PRIOR_FACTORIES)


SMOKE = {
    "svi": dict(sigma=0.1, steps=2, batch_size=4, n_samples=3, n_layers=1, hidden=8),
    "ambient-vi": dict(sigma=0.1, steps=2, batch_size=4, n_samples=3, n_layers=1, hidden=8),
    "langevin": dict(sigma=0.1, n_chains=2, n_samples=2, burn_in=2, step_size=1e-4, adjusted=True),
    "pl-mcmc": dict(sigma=0.1, n_chains=2, n_samples=2, burn_in=2),
}


@pytest.mark.parametrize("family", _family_names())
def test_every_sampler_runs_on_every_prior_family(family):
    """Bijective (RealNVP) and injective (TRUMPET, NIF, relaxed flow) priors: finite samples of the right shape."""
    from prior_registry import build

    prior = build(family)
    op = RandomMask(prior.data_shape, 0.5, seed=0).double()
    y = op(prior.sample(1, generator=seeded()))
    for method, opts in SMOKE.items():
        result = solve(op, prior, y, method, generator=seeded(), **opts)
        assert result.samples.shape[0] == 1 and result.samples.shape[2:] == prior.data_shape, method
        assert torch.isfinite(result.samples).all(), method
    model = train_amortized(op, prior, sigma=0.1, steps=2, batch_size=4, n_calibration=8, n_layers=1, hidden=8)
    result = solve(op, prior, y, "avi", amortized=model, n_samples=3, generator=seeded())
    assert result.samples.shape == (1, 3, *prior.data_shape) and torch.isfinite(result.samples).all()
    assert all(p.grad is None for p in prior.parameters())  # the prior stays untouched


@pytest.mark.parametrize("method", ["svi", "ambient-vi", "langevin"])
def test_callback_sees_images(method):
    prior, op = make_prior(), OPERATORS["identity"]()
    seen = []
    solve(op, prior, measure(prior, op), method, callback=lambda t, x, info: seen.append((t, x, info)), **TINY[method])
    assert seen and all(x.shape[1:] == SHAPE and info for _, x, info in seen)


# ---------------------------------------------------------------- vector flow layers, chain statistics


def _perturbed(module: torch.nn.Module, seed: int = 7) -> torch.nn.Module:
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=seeded(seed), dtype=p.dtype))
    return module


@pytest.mark.parametrize(
    "make, context",
    [
        (lambda: LULinear(3), None),
        (lambda: AffineCoupling(3, conditioner="mlp", scale="tanh", hidden=8), None),
        (lambda: AffineCoupling(4, flip=True, conditioner="mlp", scale="tanh", context_dim=2, hidden=8), 2),
        (lambda: ConditionalAffine(3, context_dim=2, hidden=8), 2),
    ],
    ids=["lu-linear", "coupling-mlp", "coupling-mlp-context", "conditional-affine"],
)
def test_vector_layers_invert_and_have_exact_log_det(make, context):
    layer = _perturbed(make())
    dim = 4 if isinstance(layer, AffineCoupling) and layer.conditional else 3
    x = torch.randn(5, dim, generator=seeded(1), dtype=torch.float64)
    h = None if context is None else torch.randn(5, context, generator=seeded(2), dtype=torch.float64)
    call = (lambda v: layer(v, h)) if layer.conditional else layer
    inverse = (lambda v: layer.inverse(v, h)) if layer.conditional else layer.inverse
    y, logdet = call(x)
    back, logdet_back = inverse(y)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(logdet_back, logdet)
    for i in range(2):
        hi = None if h is None else h[i : i + 1]
        f = (lambda v: layer(v.unsqueeze(0), hi)[0][0]) if layer.conditional else (lambda v: layer(v.unsqueeze(0))[0][0])
        jac = torch.autograd.functional.jacobian(f, x[i])
        assert float(logdet[i].detach()) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-10)


def test_vector_layer_errors_name_the_problem():
    with pytest.raises(ValueError, match="context_dim"):
        AffineCoupling(4, 4, context_dim=3)
    with pytest.raises(ValueError, match="conditioner"):
        AffineCoupling(4, conditioner="resnet")
    with pytest.raises(ValueError, match="context is required"):
        AffineCoupling(4, conditioner="mlp", context_dim=2)(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="unconditional"):
        AffineCoupling(4, conditioner="mlp")(torch.zeros(1, 4), torch.zeros(1, 2))


def test_running_moments_and_ess_from_chain_stats():
    data = torch.randn(4, 500, 3, generator=seeded(3), dtype=torch.float64)
    moments = RunningMoments()
    for part in data.split(7, dim=1):
        moments.update(part, dim=1)
    torch.testing.assert_close(moments.mean, data.mean(1))
    torch.testing.assert_close(moments.variance, data.var(1))
    ess = effective_sample_size(data)  # 4 independent chains of 500 iid draws
    assert ess.shape == (3,) and bool(((ess > 1000) & (ess < 4000)).all())


# ---------------------------------------------------------------- the driver contract, noise levels, errors


POSTERIOR_METHODS = ["ambient-vi", "avi", "langevin", "pl-mcmc", "svi"]


@pytest.fixture(scope="module")
def tiny_amortized():
    prior, op = make_prior(), OPERATORS["random-mask"]()
    model = train_amortized(op, prior, sigma=SIGMA, steps=2, batch_size=4, n_calibration=8, n_layers=1, hidden=8,
                            generator=seeded())
    return prior, op, model


def _tiny_options(method, model):
    return dict(amortized=model, n_samples=5) if method == "avi" else dict(TINY[method])


def test_every_posterior_method_is_covered():
    assert sorted(list_methods("posterior")) == POSTERIOR_METHODS


@pytest.mark.parametrize("method", POSTERIOR_METHODS)
def test_callback_stops_every_sampler_and_history_has_the_loss(method, tiny_amortized):
    prior, op, model = tiny_amortized
    y = measure(prior, op, n=2)
    seen = []

    def stop_at_one(it, x, info):
        seen.append((it, tuple(x.shape), sorted(info)))
        return it == 1

    result = solve(op, prior, y, method, callback=stop_at_one, generator=seeded(), **_tiny_options(method, model))
    expected = 1 if method == "avi" else 2  # avi is a single pass
    assert len(result.history["loss"]) == expected and len(seen) == expected
    assert all(shape == (2, *SHAPE) and "loss" in keys for _, shape, keys in seen)
    assert all(len(v) == expected for v in result.history.values())
    assert result.samples.shape[0] == 2 and torch.isfinite(result.samples).all()


@pytest.mark.parametrize("method", POSTERIOR_METHODS)
def test_every_sampler_reports_progress_through_the_driver(method, tiny_amortized, monkeypatch):
    prior, op, model = tiny_amortized
    calls = []
    real = driver.progress_indicator

    def recording(total, desc, enabled):
        calls.append((total, desc, enabled))
        return real(total, desc, False)

    monkeypatch.setattr(driver, "progress_indicator", recording)
    solve(op, prior, measure(prior, op), method, progress=True, **_tiny_options(method, model))
    assert calls and all(desc == method and enabled for _, desc, enabled in calls)


@pytest.mark.parametrize("method", sorted(TINY))
def test_per_image_sigma_from_add_noise_is_accepted(method):
    """The README's call: the sigma tensor add_noise returns goes straight into solve()."""
    prior, op = make_prior(), OPERATORS["random-mask"]()
    clean = op(prior.sample(3, generator=seeded(1)))
    y, sigma = add_noise(clean, snr_db=20.0, generator=seeded(2))
    assert sigma.shape == (3,) and len(set(sigma.tolist())) == 3
    result = solve(op, prior, y, method, generator=seeded(), **dict(TINY[method], sigma=sigma))
    assert result.samples.shape[0] == 3 and torch.isfinite(result.samples).all()
    single = solve(op, prior, y[0], method, generator=seeded(), **dict(TINY[method], sigma=sigma[:1]))
    assert single.x_hat.shape == SHAPE
    with pytest.raises(ValueError, match="sigma"):
        solve(op, prior, y, method, **dict(TINY[method], sigma=sigma[:2]))
    with pytest.raises(ValueError, match="sigma"):
        solve(op, prior, y, method, **dict(TINY[method], sigma=[0.3, 0.0, 0.3]))


PER_IMAGE_SIGMA = torch.tensor([0.15, 0.6])


@pytest.mark.parametrize("method, opts", [("svi", SVI_FAST), ("langevin", MALA_FAST)], ids=["svi", "mala"])
def test_per_image_sigma_targets_each_images_posterior(method, opts):
    prior, op = make_prior(), OPERATORS["gaussian"]()
    x = prior.sample(2, generator=seeded(3))
    y = op(x) + PER_IMAGE_SIGMA.view(2, 1) * torch.randn(2, 8, generator=seeded(4))
    exact = prior.exact_posterior(op, y, PER_IMAGE_SIGMA)
    result = solve(op, prior, y, method, generator=seeded(), **dict(opts, sigma=PER_IMAGE_SIGMA))
    for i in range(2):
        check_moments(result.samples[i], exact.mean[i], exact.cov[i])
    widths = [float(torch.trace(torch.cov(result.samples[i].flatten(1).T))) for i in range(2)]
    assert widths[0] < widths[1]  # the noisier measurement leaves a wider posterior


def test_data_fit_uses_one_sigma_per_row():
    op = Identity((2,))
    fit = data_fit(op, torch.zeros(3, 2), torch.ones(3, 2), torch.tensor([1.0, 2.0, 0.5]))
    assert fit.tolist() == [1.0, 0.25, 4.0]
    with pytest.raises(ValueError, match="sigma"):
        data_fit(op, torch.zeros(3, 2), torch.ones(3, 2), torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("method", POSTERIOR_METHODS)
def test_empty_batch_bad_generator_and_bad_callback_are_clear_errors(method, tiny_amortized):
    prior, op, model = tiny_amortized
    opts = _tiny_options(method, model)
    with pytest.raises(ValueError, match=r"y: .*(empty|at least one)"):
        solve(op, prior, torch.zeros(0, *op.out_shape), method, **opts)
    with pytest.raises(TypeError, match="generator"):
        solve(op, prior, measure(prior, op), method, generator=5, **opts)
    with pytest.raises(TypeError, match="callback"):
        solve(op, prior, measure(prior, op), method, callback=5, **opts)


def test_train_amortized_checks_generator_callback_data_and_sigma():
    prior, op = make_prior(), OPERATORS["identity"]()
    with pytest.raises(TypeError, match="generator"):
        train_amortized(op, prior, sigma=SIGMA, steps=1, generator=5)
    with pytest.raises(TypeError, match="callback"):
        train_amortized(op, prior, sigma=SIGMA, steps=1, callback=5)
    with pytest.raises(ValueError, match="data"):
        train_amortized(op, prior, sigma=SIGMA, steps=1, data=torch.zeros(0, *SHAPE))
    with pytest.raises(ValueError, match="one noise level"):
        train_amortized(op, prior, sigma=[0.1, 0.2], steps=1)


def test_avi_accepts_only_the_trained_sigma(tiny_amortized):
    prior, op, model = tiny_amortized
    y = measure(prior, op, n=2)
    solve(op, prior, y, "avi", amortized=model, n_samples=2, sigma=torch.full((2,), SIGMA))
    with pytest.raises(ValueError, match="trained for sigma=0.3"):
        solve(op, prior, y, "avi", amortized=model, n_samples=2, sigma=0.5)


def test_mcmc_stopped_during_burn_in_returns_the_current_states():
    prior, op = make_prior(), OPERATORS["identity"]()
    opts = dict(TINY["pl-mcmc"], burn_in=50)
    result = solve(op, prior, measure(prior, op), "pl-mcmc", callback=lambda it, x, info: it == 3, **opts)
    assert result.extras["stopped_by"] == "callback" and result.extras["iterations"] == 4
    assert result.samples.shape == (1, 2, *SHAPE) and torch.isfinite(result.samples).all()


# ---------------------------------------------------------------- the stopping rule of the VI fits


def test_plateau_rule_stops_after_two_flat_windows_and_never_with_tol_zero():
    rule, never = PlateauRule(tol=0.1, window=3), PlateauRule(tol=0.0, window=3)
    losses = [torch.tensor([10.0 - t, 5.0]) for t in range(9)]
    masks = [rule.update(v).tolist() for v in losses]
    assert masks[4] == [False, False] and masks[5] == [False, True]  # image 1 flat over windows 1 and 2
    assert masks[8] == [False, True]  # image 0 keeps improving by 3 per window
    assert not any(never.update(torch.tensor([1.0, 1.0])).any() for _ in range(20))


def test_vi_stopping_rule_never_runs_past_the_cap():
    prior, op = make_prior(), OPERATORS["identity"]()
    y = measure(prior, op, n=2)
    capped = solve(op, prior, y, "svi", **dict(TINY["svi"], steps=7, tol=1e9, window=5))
    assert len(capped.history["loss"]) == 7 and capped.extras["steps"].tolist() == [7, 7]
    stopped = solve(op, prior, y, "svi", **dict(TINY["svi"], steps=50, tol=1e9, window=5))
    assert stopped.extras["stopped_by"] == "converged" and stopped.extras["steps"].tolist() == [10, 10]
    assert len(stopped.history["loss"]) == 10


# Documented in VIOptions: with the rule (tol=0.01 nats, window=100) on this problem the posterior
# mean moves by less than 5 % of the posterior's RMS size and the covariance by less than 15 %.
STOP_MEAN_TOL = 0.05
STOP_COV_TOL = 0.15


def test_vi_stopping_rule_stops_a_converged_fit_early_and_changes_little():
    prior, op = make_prior(), OPERATORS["gaussian"]()
    y = measure(prior, op)
    exact = prior.exact_posterior(op, y, SIGMA)
    opts = dict(SVI_FAST, steps=600)
    full = solve(op, prior, y, "svi", generator=seeded(), **opts)
    early = solve(op, prior, y, "svi", generator=seeded(), tol=0.01, window=100, **opts)
    assert full.extras["steps"].tolist() == [600] and full.extras["stopped_by"] == "cap"
    assert early.extras["stopped_by"] == "converged" and int(early.extras["steps"][0]) < 600
    check_moments(full.samples[0], exact.mean[0], exact.cov[0])
    check_moments(early.samples[0], exact.mean[0], exact.cov[0], STOP_MEAN_TOL, STOP_COV_TOL)
    a, b = full.samples[0].flatten(1).double(), early.samples[0].flatten(1).double()
    scale = float((a.mean(0).pow(2).sum() + torch.trace(torch.cov(a.T))).sqrt())
    assert float((a.mean(0) - b.mean(0)).norm()) / scale < STOP_MEAN_TOL
    assert rel(torch.cov(b.T), torch.cov(a.T)) < STOP_COV_TOL
