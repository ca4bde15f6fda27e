"""MAP solvers: iflow, iflow-l, csgm, dip, tv on problems built to be solvable."""

import copy
import warnings

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_tv_chambolle
from solver_problems import SHAPE, linear_problem, rel_error, seeded

from invprob.operators import Identity, RandomMask, from_callable, from_matrix
from invprob.priors import LinearGaussianPrior
from invprob.solvers import MisfitWarning, SolverDiverged, solve
from invprob.solvers.driver import iterate
from invprob.solvers.baselines import divergence, image_gradient, total_variation, tv_prox
from invprob.solvers.dip import Hourglass

QUIET = dict(progress=False)


# ---------------------------------------------------------------- iFlow / iFlow-L (Algorithm 1)


@pytest.mark.parametrize("optimizer, lr, iterations, tol", [("adam", 1e-2, 1000, 1e-3), ("gd", 0.5, 200, 1e-5)])
def test_iflow_recovers_x_on_the_range(optimizer, lr, iterations, tol):
    p = linear_problem(dtype=torch.float64)
    result = solve(p.op, p.prior, p.y, "iflow", optimizer=optimizer, lr=lr, iterations=iterations, tol=0.0, clip_output=False, **QUIET)
    assert rel_error(result.x_hat, p.x) < tol
    assert len(result.history["loss"]) == iterations and len(result.history["data_fit"]) == iterations
    assert result.history["data_fit"][-1] < 1e-3 * result.history["data_fit"][0]


def test_iflow_iterates_stay_on_the_range():
    p = linear_problem()
    start = p.op.pinv(p.y)
    assert _range_gap(p.prior, start).min() > 0.1, "A^+ y is off the range, so staying on it is not trivial"
    seen = []
    result = solve(p.op, p.prior, p.y, "iflow", iterations=20, callback=lambda i, v, info: seen.append(v), clip_output=False, **QUIET)
    assert len(seen) == 20
    for v in seen + [result.x_hat]:
        assert _range_gap(p.prior, v).max() < 1e-5


def _range_gap(prior, v):
    return (prior.project(v) - v).flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1)


def test_iflow_l_reaches_the_exact_posterior_mode():
    """With lam = 1 and the true sigma, eq. 7 is sigma^2 times the negative log posterior."""
    sigma = 0.1
    p = linear_problem(dtype=torch.float64, sigma=sigma)
    exact = p.prior.exact_posterior(p.op, p.y, sigma).mean
    result = solve(p.op, p.prior, p.y, "iflow-l", optimizer="gd", lr=0.5, iterations=300, tol=0.0, lam=1.0, sigma=sigma,
                   clip_output=False, **QUIET)
    assert rel_error(result.x_hat, exact) < 1e-6
    plain = solve(p.op, p.prior, p.y, "iflow", optimizer="gd", lr=0.5, iterations=300, clip_output=False, **QUIET)
    assert rel_error(plain.x_hat, exact) > 1e-3, "the prior term must change the answer"


def test_iflow_latent_start_is_the_latent_posterior_mode():
    """start='latent' begins at the L-BFGS latent MAP: for a linear-Gaussian prior, the exact posterior mean."""
    sigma = 0.1
    p = linear_problem(dtype=torch.float64, sigma=sigma)
    exact = p.prior.exact_posterior(p.op, p.y, sigma).mean
    result = solve(p.op, p.prior, p.y, "iflow-l", start="latent", sigma=sigma, optimizer="gd", lr=1e-12, iterations=1,
                   start_range=None, **QUIET)
    assert rel_error(result.x_hat, exact) < 1e-5


def test_iflow_l_latent_and_range_densities_agree_for_a_linear_generator():
    """A linear generator's volume term is a constant: density='latent' and 'range' reach the same mode."""
    sigma = 0.1
    p = linear_problem(dtype=torch.float64, sigma=sigma)
    exact = p.prior.exact_posterior(p.op, p.y, sigma).mean
    common = dict(optimizer="gd", lr=0.5, iterations=300, tol=0.0, sigma=sigma, clip_output=False, **QUIET)
    latent = solve(p.op, p.prior, p.y, "iflow-l", density="latent", **common)
    on_range = solve(p.op, p.prior, p.y, "iflow-l", density="range", **common)
    assert rel_error(latent.x_hat, exact) < 1e-6
    torch.testing.assert_close(latent.x_hat, on_range.x_hat)


@pytest.mark.filterwarnings("ignore::invprob.solvers.MisfitWarning")
@pytest.mark.parametrize("density, used", [("latent", "project_with_latent_log_prob"), ("range", "project_with_log_prob")])
def test_iflow_l_density_selects_the_prior_term(density, used, monkeypatch):
    p = linear_problem(dtype=torch.float64, sigma=0.1)
    calls = {name: 0 for name in ("project_with_latent_log_prob", "project_with_log_prob")}
    for name in calls:
        method = getattr(p.prior, name)

        def counted(x, _method=method, _name=name):
            calls[_name] += 1
            return _method(x)

        monkeypatch.setattr(p.prior, name, counted)
    solve(p.op, p.prior, p.y, "iflow-l", density=density, sigma=0.1, iterations=5, tol=0.0, **QUIET)
    assert calls[used] >= 5 and sum(calls.values()) == calls[used]
    with pytest.raises(ValueError, match="density"):
        solve(p.op, p.prior, p.y, "iflow-l", density="manifold", sigma=0.1, **QUIET)


def test_iflow_l_weight_is_lam_times_sigma_squared():
    sigma = 0.1
    p = linear_problem(dtype=torch.float64, sigma=sigma)
    common = dict(optimizer="gd", lr=0.5, iterations=100, tol=0.0, **QUIET)
    with_sigma = solve(p.op, p.prior, p.y, "iflow-l", lam=2.0, sigma=sigma, **common)
    folded = solve(p.op, p.prior, p.y, "iflow-l", lam=2.0 * sigma**2, sigma=1.0, **common)
    torch.testing.assert_close(with_sigma.x_hat, folded.x_hat)
    assert with_sigma.extras["sigma_source"] == "given"


def test_iflow_l_estimates_sigma_from_the_range_constrained_residual():
    """Without sigma, ||y - A v||^2 / (m - d) of iFlow's fit estimates the noise level of each image."""
    torch.manual_seed(0)
    n, d, m, sigma = 64, 4, 48, 0.05
    prior = LinearGaussianPrior(torch.randn(n, d, dtype=torch.float64) / 4, data_shape=(1, 8, 8))
    op = from_matrix(torch.randn(m, n, dtype=torch.float64) / m**0.5, (1, 8, 8))
    x = prior.sample(8, generator=seeded(1))
    y = op(x) + sigma * torch.randn(8, m, generator=seeded(2), dtype=torch.float64)
    result = solve(op, prior, y, "iflow-l", optimizer="gd", lr=0.5, iterations=300, **QUIET)
    assert result.extras["sigma_source"] == "estimated"
    ratio = result.extras["sigma"] / sigma
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.15) and bool((ratio > 0.6).all() and (ratio < 1.4).all())


def test_iflow_l_flags_an_estimate_that_does_not_explain_its_measurement():
    """extras['misfit'] is ||y - A x_hat||^2 / (m sigma^2): about 1 at the true sigma, a warning when far above."""
    p = linear_problem(dtype=torch.float64, sigma=0.1)
    common = dict(optimizer="gd", lr=0.5, iterations=300, start_range=None, **QUIET)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MisfitWarning)
        fine = solve(p.op, p.prior, p.y, "iflow-l", sigma=0.1, **common)
    assert fine.extras["misfit"].shape == (2,) and bool((fine.extras["misfit"] < 3).all())
    with pytest.warns(MisfitWarning, match=r"iflow-l: the estimate of image\(s\) \[0, 1\] does not explain its measurement"):
        wrong = solve(p.op, p.prior, p.y, "iflow-l", sigma=1e-3, **common)
    torch.testing.assert_close(wrong.extras["misfit"], fine.extras["misfit"] * 1e4, rtol=0.2, atol=0)


def test_iflow_l_per_sample_sigma_matches_singles():
    p = linear_problem(dtype=torch.float64, sigma=0.1)
    sigmas = [0.1, 0.3]
    common = dict(optimizer="gd", lr=0.5, iterations=50, lam=1.0, **QUIET)
    batch = solve(p.op, p.prior, p.y, "iflow-l", sigma=sigmas, **common)
    for i in range(2):
        single = solve(p.op, p.prior, p.y[i], "iflow-l", sigma=sigmas[i], **common)
        torch.testing.assert_close(batch.x_hat[i], single.x_hat)


def test_callback_can_stop_early_and_x_init_is_used():
    p = linear_problem(dtype=torch.float64)
    result = solve(p.op, p.prior, p.y, "iflow", iterations=50, callback=lambda i, v, info: i == 4, **QUIET)
    assert len(result.history["loss"]) == 5
    start = solve(p.op, p.prior, p.y, "iflow", x_init=p.x, iterations=1, lr=1e-12, start_range=None, **QUIET)
    assert rel_error(start.x_hat, p.x) < 1e-9


def test_iflow_without_final_projection_returns_the_raw_iterate():
    p = linear_problem(dtype=torch.float64)
    result = solve(p.op, p.prior, p.y, "iflow", iterations=1, lr=1e-12, final_projection=False, start_range=None,
                   start="pinv", **QUIET)
    torch.testing.assert_close(result.x_hat, p.op.pinv(p.y))


def test_iflow_clips_the_start_to_start_range():
    p = linear_problem(dtype=torch.float64)
    start = p.op.pinv(p.y)
    assert start.abs().max() > 0.5, "the test needs a start that the range clips"
    result = solve(p.op, p.prior, p.y, "iflow", iterations=1, lr=1e-12, final_projection=False, start_range=(-0.5, 0.5),
                   start="pinv", **QUIET)
    torch.testing.assert_close(result.x_hat, start.clamp(-0.5, 0.5))
    with pytest.raises(ValueError, match="start_range"):
        solve(p.op, p.prior, p.y, "iflow", start_range=(1.0, -1.0), **QUIET)


def test_iflow_clips_its_output_to_the_data_range_and_never_moves_away_from_a_truth_inside_it():
    p = linear_problem(dtype=torch.float64)
    common = dict(iterations=20, start="pinv", start_range=(-0.5, 0.5), **QUIET)
    raw = solve(p.op, p.prior, p.y, "iflow", clip_output=False, **common).x_hat
    assert raw.abs().max() > 0.5, "the test needs an estimate that leaves the range"
    clipped = solve(p.op, p.prior, p.y, "iflow", **common).x_hat
    torch.testing.assert_close(clipped, raw.clamp(-0.5, 0.5))
    truth = p.x.clamp(-0.5, 0.5)
    assert torch.all((clipped - truth).abs() <= (raw - truth).abs() + 1e-12)


def test_keep_best_returns_each_images_lowest_objective_iterate():
    """With a step that makes the data fit grow, keep_best returns the best seen iterate, per image."""
    p = linear_problem(dtype=torch.float64)
    seen = []
    common = dict(optimizer="gd", lr=3.0, iterations=6, callback=lambda i, v, info: seen.append(v), range_factor=1e9, clip_output=False, **QUIET)
    last = solve(p.op, p.prior, p.y, "iflow", keep_best=False, **common)
    best = solve(p.op, p.prior, p.y, "iflow", **common)
    candidates = torch.stack([*seen[:6], last.x_hat])  # both runs see the same iterates
    fits = (p.op(candidates.flatten(0, 1)).reshape(7, len(p.y), -1) - p.y.flatten(1)).pow(2).sum(-1)
    assert fits[-1].min() > fits[0].max(), "the test needs iterates that get worse"
    torch.testing.assert_close(best.x_hat, candidates[fits.argmin(0), torch.arange(len(p.y))])
    torch.testing.assert_close(last.x_hat, candidates[-1])


def test_divergence_is_reported_with_the_iteration():
    p = linear_problem()
    with pytest.raises(SolverDiverged, match=r"iteration \d+.*smaller step"):
        solve(p.op, p.prior, p.y, "iflow", optimizer="gd", lr=1e6, iterations=200, **QUIET)


def test_a_projection_leaving_the_plausible_range_is_restarted_then_reported():
    """An absurd step sends the iterate far outside the data range: the image is restarted from the
    prior's mean image once, and a second excursion raises SolverDiverged naming the image."""
    p = linear_problem()
    with pytest.raises(SolverDiverged, match=r"image\(s\) \[0, 1\] left the prior's plausible range.*smaller step size"):
        solve(p.op, p.prior, p.y, "iflow", start="prior-mean", optimizer="gd", lr=50.0, iterations=100, **QUIET)
    ok = solve(p.op, p.prior, p.y, "iflow", iterations=20, **QUIET)
    assert not bool(ok.extras["restarted"].any())


# ---------------------------------------------------------------- CSGM


def test_csgm_recovers_x():
    p = linear_problem()
    result = solve(p.op, p.prior, p.y, "csgm", lr=0.05, iterations=300, restarts=3, generator=seeded(), **QUIET)
    assert rel_error(result.x_hat, p.x) < 1e-3


def test_csgm_keeps_the_restart_with_the_best_data_fit():
    p = linear_problem()
    result = solve(p.op, p.prior, p.y, "csgm", lr=0.05, iterations=5, restarts=6, generator=seeded(), **QUIET)
    fits = result.extras["restart_data_fit"]
    assert fits.shape == (2, 6)
    assert fits.std(1).min() > 0, "restarts must differ for the choice to matter"
    torch.testing.assert_close(result.extras["best_restart"], fits.argmin(1))
    achieved = (p.op(result.x_hat) - p.y).flatten(1).pow(2).sum(1)
    torch.testing.assert_close(achieved, fits.min(1).values)
    torch.testing.assert_close(result.x_hat, p.prior.decode(result.extras["latent"]))


def test_csgm_screening_goes_on_with_each_images_best_restart_on_its_own_trajectory():
    """After `screen` iterations each image keeps the restart of smallest data fit, with its Adam
    state: that restart ends where it ends without screening (the rows of a batch do not interact)."""
    p = linear_problem(sigma=0.05)
    options = dict(lr=0.02, restarts=4, tol=0.0, **QUIET)
    at_screen = solve(p.op, p.prior, p.y, "csgm", iterations=10, screen=0, generator=seeded(1), **options)
    full = solve(p.op, p.prior, p.y, "csgm", iterations=30, screen=0, generator=seeded(1), **options)
    seen = []
    screened = solve(p.op, p.prior, p.y, "csgm", iterations=30, screen=10, generator=seeded(1),
                     callback=lambda it, x, info: seen.append(it) and None, **options)
    fits = at_screen.extras["restart_data_fit"]
    assert fits.std(1).min() > 0, "restarts must differ for the choice to matter"
    winner, rows = fits.argmin(1), torch.arange(2)
    assert (winner != 0).any() and (winner != winner[0]).any(), "the winners must differ for the pick to matter"
    assert torch.equal(screened.extras["best_restart"], winner) and screened.extras["iterations"] == 30
    assert seen == list(range(30))
    torch.testing.assert_close(screened.extras["restart_data_fit"][rows, winner], full.extras["restart_data_fit"][rows, winner])
    dropped = torch.ones_like(fits, dtype=torch.bool)
    dropped[rows, winner] = False
    torch.testing.assert_close(screened.extras["restart_data_fit"][dropped], fits[dropped])
    torch.testing.assert_close(screened.x_hat, p.prior.decode(screened.extras["latent"]))
    assert len(screened.history["loss"]) == 30


def test_csgm_screening_at_or_after_the_cap_changes_nothing():
    p = linear_problem()
    runs = [solve(p.op, p.prior, p.y, "csgm", lr=0.05, iterations=8, restarts=3, screen=screen, generator=seeded(), **QUIET)
            for screen in (0, 8, 100)]
    assert all(torch.equal(run.x_hat, runs[0].x_hat) for run in runs[1:])


def _last_moves(estimates):
    """Per image, the last callback index at which its estimate changed."""
    steps = torch.stack(estimates)
    moved = (steps[1:] - steps[:-1]).flatten(2).abs().amax(2) > 0
    return [int(torch.nonzero(moved[:, b]).max()) + 1 if bool(moved[:, b].any()) else 0 for b in range(steps.shape[1])]


@pytest.mark.parametrize("method, options", [
    ("csgm", dict(lr=0.05, restarts=3)),
    ("csgm", dict(lr=0.05, restarts=3, screen=20)),
    ("iflow", dict(lr=0.05, keep_best=False, clip_output=False, start="pinv")),
])
def test_a_converged_image_stays_where_it_converged_while_the_others_go_on(method, options):
    """Adam moves a row with zero gradient by its momentum: a converged image must be held fixed."""
    p = linear_problem(sigma=0.05)
    seen = []
    solve(p.op, p.prior, p.y, method, iterations=200, tol=1e-3, window=5, generator=seeded(), progress=False,
          callback=lambda it, x, info: seen.append(x.clone()) and None, **options)
    last = _last_moves(seen)
    assert min(last) < len(seen) - 5, f"one image must converge well before the run ends: {last} of {len(seen)}"


def test_iterate_numbers_a_continued_run_from_its_offset():
    seen = []

    def step(it, active):
        seen.append(it)
        return {"loss": torch.ones(1)}

    trace = iterate("count", 3, step, batch=1, estimate=lambda: torch.zeros(1), offset=5)
    assert seen == [5, 6, 7] and trace.iterations == 3 and len(trace.history["loss"]) == 3


def test_csgm_x_init_seeds_the_first_restart():
    p = linear_problem()
    result = solve(p.op, p.prior, p.y, "csgm", x_init=p.x, lr=1e-6, iterations=1, restarts=4, generator=seeded(), **QUIET)
    assert result.extras["best_restart"].tolist() == [0, 0]


def test_csgm_lbfgs_from_the_latent_mean_reaches_the_exact_posterior_mode_in_few_iterations():
    """lam = 1 with the true sigma: the latent posterior mode, which for a linear-Gaussian prior is the exact posterior mean."""
    sigma = 0.1
    p = linear_problem(dtype=torch.float64, sigma=sigma)
    exact = p.prior.exact_posterior(p.op, p.y, sigma).mean
    options = dict(lam=1.0, sigma=sigma, restarts=1, start="mean", tol=0.0, **QUIET)
    quasi_newton = solve(p.op, p.prior, p.y, "csgm", optimizer="lbfgs", iterations=30, **options)
    assert rel_error(quasi_newton.x_hat, exact) < 1e-5
    adam = solve(p.op, p.prior, p.y, "csgm", optimizer="adam", iterations=30, **options)
    assert rel_error(adam.x_hat, exact) > 1e-3, "30 Adam steps are far from it: the quasi-Newton steps are what converge"


def test_csgm_mean_start_puts_the_first_restart_at_the_latent_mean():
    p = linear_problem(dtype=torch.float64)
    result = solve(p.op, p.prior, p.y, "csgm", start="mean", optimizer="gd", lr=1e-12, iterations=1, restarts=1, **QUIET)
    torch.testing.assert_close(result.extras["latent"], torch.zeros_like(result.extras["latent"]))


def test_csgm_lbfgs_on_an_exploding_prior_raises_solver_diverged():
    from invprob.priors import TRUMPET

    torch.manual_seed(0)
    untrained = TRUMPET((1, 16, 16), 32, n_scales=2, hidden=4, unet_depth=1, n_latent_steps=2, latent_hidden=16).eval()
    y = torch.randn(1, 1, 16, 16, generator=seeded())
    with pytest.raises(SolverDiverged, match="optimizer='adam'"):
        solve(Identity((1, 16, 16)), untrained, y, "csgm", optimizer="lbfgs", start="mean", restarts=1, iterations=5, **QUIET)


def test_csgm_regularisation_shrinks_the_latent():
    p = linear_problem()
    common = dict(lr=0.05, iterations=300, restarts=2, generator=seeded(), **QUIET)
    free = solve(p.op, p.prior, p.y, "csgm", **common).extras["latent"].norm()
    shrunk = solve(p.op, p.prior, p.y, "csgm", lam=1.0, **dict(common, generator=seeded())).extras["latent"].norm()
    assert shrunk < 0.9 * free


# ---------------------------------------------------------------- Deep Image Prior


def _piecewise_image(batch=2, size=8):
    x = torch.zeros(batch, 1, size, size)
    x[:, :, 2:6, 2:6] = 1.0
    x[1:, :, 0:3, 4:8] += 0.5
    return x


def test_dip_hourglass_fits_a_well_posed_problem():
    x = _piecewise_image()
    op = Identity(SHAPE)
    result = solve(op, None, x, "dip", iterations=150, channels=8, generator=seeded(), **QUIET)
    assert rel_error(result.x_hat, x) < 0.05
    assert result.extras["iterations"].tolist() == [150, 150]


def test_dip_stops_at_the_noise_level():
    x = _piecewise_image()
    sigma = 0.1
    y = x + sigma * torch.randn(x.shape, generator=seeded(1))
    op = Identity(SHAPE)
    result = solve(op, None, y, "dip", iterations=400, channels=8, stop_at_noise=True, sigma=sigma, generator=seeded(), **QUIET)
    steps = result.extras["iterations"]
    assert (steps < 400).all()
    fit = (result.x_hat - y).flatten(1).pow(2).sum(1)
    assert (fit <= 64 * sigma**2).all()


def test_dip_stops_at_the_noise_level_by_default_when_sigma_is_given():
    x = _piecewise_image()
    sigma = 0.1
    y = x + sigma * torch.randn(x.shape, generator=seeded(1))
    op = Identity(SHAPE)
    common = dict(iterations=400, channels=8, sigma=sigma, **QUIET)
    early = solve(op, None, y, "dip", generator=seeded(), **common)
    full = solve(op, None, y, "dip", stop_at_noise=False, generator=seeded(), **common)
    assert (early.extras["iterations"] < 400).all()
    assert (full.extras["iterations"] == 400).all()


def test_dip_on_the_priors_decoder_leaves_the_prior_untouched():
    p = linear_problem()
    before = copy.deepcopy(p.prior.state_dict())
    op = Identity(SHAPE)
    result = solve(op, p.prior, p.x, "dip", network="prior", lr=0.05, iterations=300, generator=seeded(), **QUIET)
    assert rel_error(result.x_hat, p.x) < 0.02
    for key, value in p.prior.state_dict().items():
        assert torch.equal(value, before[key])
    assert not p.prior.W.requires_grad


def test_dip_rejects_unusable_inputs():
    x = _piecewise_image()
    op = Identity(SHAPE)
    with pytest.raises(ValueError, match="x_init"):
        solve(op, None, x, "dip", x_init=x, **QUIET)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        solve(Identity((16,)), None, torch.zeros(16), "dip", **QUIET)
    with pytest.raises(TypeError, match="needs an invprob Prior"):
        solve(op, None, x, "dip", network="prior", **QUIET)


def test_hourglass_handles_odd_sizes_and_is_seeded():
    a = Hourglass((2, 7, 9), 4, 5, 2, 3, seeded(3))
    b = Hourglass((2, 7, 9), 4, 5, 2, 3, seeded(3))
    z = torch.rand(1, 3, 7, 9)
    assert a(z).shape == (1, 2, 7, 9)
    torch.testing.assert_close(a(z), b(z))


# ---------------------------------------------------------------- TV (FISTA)


def test_tv_prox_matches_scikit_image():
    f = torch.rand(1, 1, 12, 12, generator=seeded(), dtype=torch.float64)
    ours, _ = tv_prox(f, 0.1, 1000)
    reference = denoise_tv_chambolle(f[0, 0].numpy(), weight=0.1, eps=1e-12, max_num_iter=1000)
    np.testing.assert_allclose(ours[0, 0].numpy(), reference, atol=1e-6)


def test_gradient_and_divergence_are_negative_adjoints():
    u = torch.randn(2, 1, 5, 6, dtype=torch.float64)
    p = torch.randn(2, 2, 1, 5, 6, dtype=torch.float64)
    assert float((image_gradient(u) * p).sum()) == pytest.approx(-float((u * divergence(p)).sum()), rel=1e-12)


def test_tv_denoises_a_piecewise_constant_image():
    x = _piecewise_image(size=16)
    op = Identity((1, 16, 16))
    y = x + 0.1 * torch.randn(x.shape, generator=seeded())
    result = solve(op, None, y, "tv", lam=0.1, iterations=100, **QUIET)
    assert rel_error(result.x_hat, x) < 0.5 * rel_error(y, x)
    assert result.history["loss"][-1] <= result.history["loss"][0]


def test_tv_inpaints_missing_pixels_inside_flat_regions():
    x = torch.ones(1, 1, 16, 16)
    x[..., 8:, :] = 2.0
    op = RandomMask((1, 16, 16), p=0.2, seed=3)
    result = solve(op, None, op(x), "tv", lam=1e-2, iterations=300, **QUIET)
    assert rel_error(result.x_hat, x) < 0.05
    assert float(total_variation(result.x_hat)) == pytest.approx(float(total_variation(x)), rel=0.1)


def test_tv_needs_a_step_for_a_nonlinear_operator():
    op = from_callable(lambda t: t**3, (1, 4, 4), pinv=lambda t: t.sign() * t.abs() ** (1 / 3))
    y = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="step"):
        solve(op, None, y, "tv", **QUIET)
    result = solve(op, None, y, "tv", step=0.05, lam=0.0, iterations=5, **QUIET)
    torch.testing.assert_close(result.x_hat, op.pinv(y), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- shared properties

FAST = {
    "iflow": dict(iterations=30),
    "iflow-l": dict(iterations=30, lam=0.5, sigma=0.1),
    "csgm": dict(iterations=20, restarts=3, lr=0.05),
    "dip": dict(iterations=10, channels=4, input_channels=4),
    "tv": dict(iterations=10, lam=0.05),
}


@pytest.mark.parametrize("method", sorted(FAST))
def test_batch_equals_singles(method):
    p = linear_problem(batch=3, sigma=0.05)
    batch = solve(p.op, p.prior, p.y, method, generator=seeded(7), **FAST[method], **QUIET)
    assert batch.x_hat.shape == (3, *SHAPE)
    for i in range(3):
        single = solve(p.op, p.prior, p.y[i], method, generator=seeded(7), **FAST[method], **QUIET)
        torch.testing.assert_close(single.x_hat, batch.x_hat[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["csgm", "dip"])
def test_seeded_runs_repeat_and_seeds_matter(method):
    p = linear_problem(sigma=0.05)
    run = lambda seed: solve(p.op, p.prior, p.y, method, generator=seeded(seed), **FAST[method], **QUIET).x_hat
    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))
