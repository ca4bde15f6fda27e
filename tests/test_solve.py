"""invprob.solve(): the registry, option validation, input handling and bad inputs."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from solver_problems import SHAPE, linear_problem, rel_error

from invprob.operators import Identity, RandomGaussian
from invprob.solvers import Result, SolverDiverged, list_methods, make_options, solve

QUIET = dict(progress=False)
MAP_METHODS = ["csgm", "dip", "iflow", "iflow-l", "pinv", "tv"]


def test_map_methods_are_registered():
    assert set(MAP_METHODS) <= set(list_methods())


def test_result_fields():
    p = linear_problem()
    result = solve(p.op, p.prior, p.y, "iflow-l", iterations=7, **QUIET)
    assert isinstance(result, Result)
    assert result.method == "iflow-l" and result.options.iterations == 7 and result.options.lam == 1.0
    assert result.seconds > 0
    assert result.x_hat.shape == p.x.shape and result.x_hat.dtype == torch.float32
    assert not result.x_hat.requires_grad
    assert set(result.history) == {"loss", "data_fit"} and len(result.history["loss"]) == 7


def test_single_and_numpy_measurements():
    p = linear_problem(batch=1)
    batched = solve(p.op, p.prior, p.y, "iflow", iterations=5, **QUIET)
    single = solve(p.op, p.prior, p.y[0], "iflow", iterations=5, **QUIET)
    from_numpy = solve(p.op, p.prior, p.y[0].numpy().astype(np.float64), "iflow", iterations=5, **QUIET)
    assert single.x_hat.shape == SHAPE and from_numpy.x_hat.shape == SHAPE
    torch.testing.assert_close(single.x_hat, batched.x_hat[0])
    torch.testing.assert_close(from_numpy.x_hat, batched.x_hat[0])
    assert from_numpy.x_hat.dtype == torch.float32, "y follows the prior's dtype"


def test_pinv_baseline_through_solve():
    p = linear_problem()
    op = RandomGaussian(SHAPE, m=64, seed=4)
    result = solve(op, None, op(p.x), "pinv")
    assert rel_error(result.x_hat, p.x) < 1e-3


@pytest.mark.parametrize(
    "method, options, match",
    [
        ("iflow", dict(learning_rate=0.1), r"learning_rate.*Valid options: .*lr"),
        ("iflow", dict(lam=0.1), "Valid options"),
        ("iflow", dict(lr=-1.0), "lr"),
        ("iflow", dict(iterations=0), "iterations"),
        ("iflow", dict(optimizer="lbfgs"), "optimizer"),
        ("iflow-l", dict(lam=-0.5), "lam"),
        ("iflow-l", dict(sigma=0.0), "sigma"),
        ("iflow-l", dict(sigma=[0.1, -0.1]), "sigma"),
        ("csgm", dict(restarts=0), "restarts"),
        ("dip", dict(network="gan"), "network"),
        ("dip", dict(stop_at_noise=True), "needs sigma"),
        ("dip", dict(lr=float("nan")), "lr"),
        ("tv", dict(inner_iterations=0), "inner_iterations"),
        ("tv", dict(step=0), "step"),
    ],
)
def test_invalid_options(method, options, match):
    with pytest.raises(ValueError, match=match):
        make_options(method, **options)
    p = linear_problem()
    with pytest.raises(ValueError, match=match):
        solve(p.op, p.prior, p.y, method, **options)


def test_options_are_frozen_and_documented():
    opts = make_options("csgm")
    assert opts.restarts == 5 and opts.lr == 0.2 and opts.lam == 0.0
    with pytest.raises(ValidationError):
        opts.restarts = 3
    for method in MAP_METHODS:
        for name, field in type(make_options(method)).model_fields.items():
            assert field.description, f"{method}.{name} has no description"


def test_unknown_method_lists_the_valid_ones():
    p = linear_problem()
    with pytest.raises(ValueError, match=r"unknown method 'iflowl'.*iflow-l"):
        solve(p.op, p.prior, p.y, "iflowl")


def test_measurement_of_the_wrong_shape():
    p = linear_problem()
    with pytest.raises(ValueError, match=r"y: expected shape \(20\) or \(B, 20\)"):
        solve(p.op, p.prior, torch.zeros(2, 21), "iflow", **QUIET)


def test_operator_and_prior_shapes_must_agree():
    p = linear_problem()
    op = RandomGaussian((1, 4, 4), m=20)
    with pytest.raises(ValueError, match="data_shape"):
        solve(op, p.prior, p.y, "csgm", **QUIET)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("method", ["iflow", "tv"])
def test_non_finite_measurements(bad, method):
    p = linear_problem()
    y = p.y.clone()
    y[0, 3] = bad
    with pytest.raises(ValueError, match="non-finite"):
        solve(p.op, p.prior, y, method, **QUIET)


def test_prior_without_project():
    p = linear_problem()
    p.prior.project = None
    with pytest.raises(TypeError, match="project"):
        solve(p.op, p.prior, p.y, "iflow", **QUIET)


def test_methods_that_need_a_prior_reject_none():
    op = Identity(SHAPE)
    with pytest.raises(TypeError, match="needs an invprob Prior"):
        solve(op, None, torch.zeros(1, *SHAPE), "iflow-l", **QUIET)


def test_x_init_of_the_wrong_shape():
    p = linear_problem()
    with pytest.raises(ValueError, match="x_init"):
        solve(p.op, p.prior, p.y, "iflow", x_init=torch.zeros(2, 64), **QUIET)


def test_divergence_names_the_iteration():
    p = linear_problem()
    with pytest.raises(SolverDiverged, match=r"iflow-l: .*iteration \d+"):
        solve(p.op, p.prior, p.y, "iflow-l", optimizer="gd", lr=1e8, iterations=100, **QUIET)


def test_divergence_at_the_first_step_suggests_a_start_inside_the_data_range():
    p = linear_problem()
    with pytest.raises(SolverDiverged, match=r"iteration 0; the first step .* x_init=op.pinv\(y\).clamp"):
        solve(p.op, p.prior, p.y, "iflow", x_init=torch.full_like(p.x, 1e30), start_range=None, iterations=3, **QUIET)


def test_solve_freezes_the_prior_weights_during_the_run_and_restores_them(monkeypatch):
    from invprob.solvers.base import frozen
    from invprob.priors import TRUMPET

    prior = TRUMPET((1, 4, 4), 4, hidden=4, n_scales=1)
    seen = []
    op = Identity((1, 4, 4))
    solve(op, prior, torch.zeros(1, 1, 4, 4), "iflow", iterations=2,
          callback=lambda it, x, info: seen.append(any(p.requires_grad for p in prior.parameters())), **QUIET)
    assert seen and not any(seen)
    assert all(p.requires_grad for p in prior.parameters())
    with pytest.raises(RuntimeError, match="boom"):
        with frozen(prior):
            raise RuntimeError("boom")
    assert all(p.requires_grad for p in prior.parameters())
    prior.base_mean.requires_grad_(False)  # a weight frozen by the user stays frozen
    with frozen(prior):
        pass
    assert not prior.base_mean.requires_grad
