"""The Gaussian off-range residual: its fit, exact conditioning on a measurement, and the SPD solver."""

import pytest
import torch

from invprob import uq
from invprob.operators import MatrixOperator, RandomMask
from invprob.priors import LinearGaussianPrior

SHAPE = (1, 4, 4)
N = 16


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model(seed: int = 0) -> uq.GaussianResidual:
    g = gen(seed)
    return uq.GaussianResidual(0.1 * torch.randn(SHAPE, generator=g, dtype=torch.float64),
                               0.05 + torch.rand(SHAPE, generator=g, dtype=torch.float64), n_images=10)


def exact_conditional(residual: uq.GaussianResidual, matrix: torch.Tensor, v: torch.Tensor, y: torch.Tensor,
                      sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of r given y = M (v + r) + e by dense Gaussian conditioning."""
    mu, var = residual.mean.flatten(), torch.diag(residual.var.flatten())
    gain = var @ matrix.T @ torch.linalg.inv(matrix @ var @ matrix.T + sigma**2 * torch.eye(matrix.shape[0],
                                                                                              dtype=torch.float64))
    mean = mu + gain @ (y.flatten() - matrix @ v.flatten() - matrix @ mu)
    return mean, var - gain @ matrix @ var


def test_fit_is_the_pixelwise_mean_and_variance_of_the_projection_residuals():
    prior = LinearGaussianPrior(torch.randn(N, 3, generator=gen(1)), data_shape=SHAPE)
    images = torch.randn(30, *SHAPE, generator=gen(2))
    residual = uq.GaussianResidual.fit(prior, images, batch_size=7)
    brute = torch.stack([x - prior.project(x[None])[0] for x in images])
    torch.testing.assert_close(residual.mean, brute.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(residual.var, brute.var(0), rtol=1e-5, atol=1e-6)
    assert residual.n_images == 30
    assert residual.rms == pytest.approx(float((brute.mean(0) ** 2 + brute.var(0)).mean().sqrt()), rel=1e-5)


def test_conditional_mean_equals_dense_gaussian_conditioning():
    residual = model()
    matrix = torch.randn(9, N, generator=gen(3), dtype=torch.float64)
    op = MatrixOperator(matrix, SHAPE)
    v = torch.randn(2, *SHAPE, generator=gen(4), dtype=torch.float64)
    y = torch.randn(9, generator=gen(5), dtype=torch.float64).reshape(op.out_shape)
    out = residual.condition_mean(op, v, y, 0.3, tol=1e-10)
    for b in range(2):
        mean, _ = exact_conditional(residual, matrix, v[b], y, 0.3)
        torch.testing.assert_close(out[b].flatten(), v[b].flatten() + mean, rtol=1e-7, atol=1e-8)


def test_samples_have_the_exact_conditional_mean_and_covariance():
    residual = model(1)
    matrix = torch.randn(6, N, generator=gen(6), dtype=torch.float64)
    op = MatrixOperator(matrix, SHAPE)
    v = torch.randn(1, *SHAPE, generator=gen(7), dtype=torch.float64)
    y = torch.randn(6, generator=gen(8), dtype=torch.float64).reshape(op.out_shape)
    draws = residual.condition_samples(op, v.expand(40_000, *SHAPE), y, 0.5, generator=gen(9), tol=1e-10) - v
    mean, cov = exact_conditional(residual, matrix, v[0], y, 0.5)
    flat = draws.flatten(1)
    torch.testing.assert_close(flat.mean(0), mean, rtol=0, atol=0.015)
    torch.testing.assert_close(torch.cov(flat.T), cov, rtol=0, atol=0.02)


def test_misfit_is_the_chi_square_of_the_data_under_the_models_covariance():
    residual = model(2)
    matrix = torch.randn(12, N, generator=gen(14), dtype=torch.float64)
    op = MatrixOperator(matrix, SHAPE)
    x = torch.randn(SHAPE, generator=gen(15), dtype=torch.float64)
    y = torch.randn(12, generator=gen(16), dtype=torch.float64).reshape(op.out_shape)
    cov = matrix @ torch.diag(residual.var.flatten()) @ matrix.T + 0.2**2 * torch.eye(12, dtype=torch.float64)
    d = y.flatten() - matrix @ (x + residual.mean).flatten()
    got = residual.misfit(op, x, y, 0.2, tol=1e-12)
    assert got.dof == 12 and got.statistic == pytest.approx(float(d @ torch.linalg.solve(cov, d)), rel=1e-8)
    assert got.reduced == pytest.approx(got.statistic / 12) and 0 < got.p_value < 1


def test_misfit_of_data_drawn_from_the_model_is_chi_square_and_the_plain_one_is_not():
    residual = model(3)
    matrix = torch.randn(40, N, generator=gen(17), dtype=torch.float64)
    op = MatrixOperator(matrix, SHAPE)
    g = gen(18)
    whitened, plain = [], []
    for _ in range(200):
        x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
        r = residual.mean + residual.var.sqrt() * torch.randn(SHAPE, generator=g, dtype=torch.float64)
        y = op((x + r)[None])[0] + 0.3 * torch.randn(op.out_shape, generator=g, dtype=torch.float64)
        whitened.append(residual.misfit(op, x, y, 0.3).reduced)
        plain.append(uq.residual_chi2(op, x, y, 0.3).reduced)
    assert sum(whitened) / 200 == pytest.approx(1.0, abs=0.05)  # E[chi^2_m / m] = 1, std of the mean 0.016
    assert sum(plain) / 200 > 3


def test_unmeasured_pixels_keep_the_training_spread_and_measured_ones_are_pinned():
    residual = uq.GaussianResidual(torch.zeros(SHAPE), torch.full(SHAPE, 0.04), n_images=10)
    op = RandomMask(SHAPE, 0.5, seed=0)
    observed = op.adjoint(op(torch.ones(1, *SHAPE)))[0].bool()
    samples = residual.condition_samples(op, torch.zeros(20_000, *SHAPE), torch.zeros(op.out_shape), 0.01,
                                         generator=gen(10))
    std = samples.std(0)
    assert 0 < observed.sum() < N
    torch.testing.assert_close(std[~observed], torch.full_like(std[~observed], 0.2), rtol=0.03, atol=0)
    assert float(std[observed].max()) < 0.011  # posterior std sqrt(1 / (1/0.04 + 1/0.01^2)) = 0.0099


def test_draws_are_reproducible_with_a_generator():
    residual, op = model(), RandomMask(SHAPE, 0.3, seed=1)
    v, y = torch.zeros(3, *SHAPE, dtype=torch.float64), torch.ones(op.out_shape, dtype=torch.float64)
    first = residual.condition_samples(op, v, y, 0.1, generator=gen(11))
    torch.testing.assert_close(first, residual.condition_samples(op, v, y, 0.1, generator=gen(11)), rtol=0, atol=0)


def test_solve_spd_matches_a_dense_solve_per_batch_entry():
    g = gen(12)
    factors = torch.randn(3, 8, 8, generator=g, dtype=torch.float64)
    matrices = factors @ factors.transpose(1, 2) + 0.1 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(3, 8, generator=g, dtype=torch.float64)
    w = uq.solve_spd(lambda p: torch.einsum("bij,bj->bi", matrices, p), b, tol=1e-12)
    torch.testing.assert_close(w, torch.linalg.solve(matrices, b), rtol=1e-7, atol=1e-9)


def test_solve_spd_warns_when_it_runs_out_of_iterations():
    diag = torch.logspace(0, 6, 50, dtype=torch.float64)[None]
    with pytest.warns(RuntimeWarning, match="did not reach the relative residual"):
        uq.solve_spd(lambda p: diag * p, torch.ones(1, 50, dtype=torch.float64), max_iter=3)


def test_solve_spd_batch_equals_each_system_alone_when_they_converge_unevenly():
    diags = torch.stack([torch.linspace(1, 2, 20), torch.logspace(0, 4, 20)]).double()
    b = torch.ones(2, 20, dtype=torch.float64)
    both = uq.solve_spd(lambda p: diags * p, b, tol=1e-8)
    for i in range(2):
        alone = uq.solve_spd(lambda p: diags[i:i + 1] * p, b[i:i + 1], tol=1e-8)
        torch.testing.assert_close(both[i:i + 1], alone, rtol=0, atol=0)


def test_solve_spd_refuses_non_finite_data_and_an_indefinite_operator():
    with pytest.raises(ValueError, match="b"):
        uq.solve_spd(lambda p: p, torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="not symmetric positive definite"):
        uq.solve_spd(lambda p: -p, torch.ones(1, 3))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"tol": 0.0}, "tol"),
    ({"max_iter": 0}, "max_iter"),
])
def test_solve_spd_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        uq.solve_spd(lambda p: p, torch.ones(1, 2), **kwargs)


def test_bad_models_and_inputs_are_refused_with_the_argument_named():
    with pytest.raises(ValueError, match="var: expected the shape of mean"):
        uq.GaussianResidual(torch.zeros(SHAPE), torch.zeros(1, 4, 5), n_images=2)
    with pytest.raises(ValueError, match="var: expected finite variances >= 0"):
        uq.GaussianResidual(torch.zeros(SHAPE), -torch.ones(SHAPE), n_images=2)
    prior = LinearGaussianPrior(torch.randn(N, 2, generator=gen(13)), data_shape=SHAPE)
    with pytest.raises(ValueError, match="at least 2 training images"):
        uq.GaussianResidual.fit(prior, torch.zeros(1, *SHAPE))
    op = RandomMask(SHAPE, 0.3, seed=1)
    with pytest.raises(ValueError, match=r"x: expected images of shape \(1, 4, 4\)"):
        model().condition_mean(op, torch.zeros(1, 1, 3, 3), torch.zeros(op.out_shape), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        model().condition_samples(op, torch.zeros(1, *SHAPE), torch.zeros(op.out_shape), 0.0)
    with pytest.raises(ValueError, match=r"y: expected one measurement of shape .* \(no batch axis\)"):
        model().condition_mean(op, torch.zeros(1, *SHAPE), torch.zeros(1, *op.out_shape), 0.1)


def test_the_digest_tells_models_apart():
    assert model(0).digest() == model(0).digest() != model(1).digest()
    m = model(0)
    assert uq.GaussianResidual(m.mean, m.var, n_images=11).digest() != m.digest()


def edge_model(seed: int = 0) -> uq.EdgeAdaptiveResidual:
    """Three bins of edge strength with distinct means and variances (and the pixel moments of :func:`model`)."""
    base = model(seed)
    return uq.EdgeAdaptiveResidual(base.mean, base.var, base.n_images,
                                   edges=torch.tensor([0.0, 0.5, 1.5, 4.0], dtype=torch.float64),
                                   bin_mean=torch.tensor([0.0, 0.1, -0.2], dtype=torch.float64),
                                   bin_var=torch.tensor([0.01, 0.1, 0.5], dtype=torch.float64))


def test_edge_strength_is_the_length_of_the_forward_differences():
    x = torch.tensor([[[[0.0, 3.0], [4.0, 1.0]]]])
    # (0,0): dx 3, dy 4 -> 5; (0,1): dx 0 (edge), dy -2 -> 2; (1,0): dx -3, dy 0 -> 3; (1,1): 0
    torch.testing.assert_close(uq.edge_strength(x), torch.tensor([[[[5.0, 2.0], [3.0, 0.0]]]]))


def test_edge_adaptive_fit_is_the_per_bin_mean_and_variance_of_the_residuals():
    prior = LinearGaussianPrior(torch.randn(N, 3, generator=gen(20)), data_shape=SHAPE)
    images = torch.randn(60, *SHAPE, generator=gen(21))
    residual = uq.EdgeAdaptiveResidual.fit(prior, images, batch_size=7, bins=4)
    pixel = uq.GaussianResidual.fit(prior, images)
    torch.testing.assert_close(residual.mean, pixel.mean) and torch.testing.assert_close(residual.var, pixel.var)
    projections = prior.project(images)
    strength, r = uq.edge_strength(projections).flatten(), (images - projections).flatten()
    torch.testing.assert_close(residual.edges.double(), torch.quantile(strength.double(), torch.linspace(0, 1, 5).double()))
    for k in range(4):
        low, high = residual.edges[k], residual.edges[k + 1]
        inside = (strength >= low) & ((strength < high) if k < 3 else torch.ones_like(strength, dtype=torch.bool))
        assert residual.bin_mean[k] == pytest.approx(float(r[inside].mean()), rel=1e-4, abs=1e-6)
        assert residual.bin_var[k] == pytest.approx(float(r[inside].var()), rel=1e-4)


def test_edge_adaptive_moments_follow_the_bin_of_each_pixel_and_clamp_outside_the_edges():
    residual = edge_model()
    x = torch.zeros(1, *SHAPE, dtype=torch.float64)
    x[0, 0, 0, 1] = 1.0  # strengths: 1 at (0,0) and (0,1) (dx), 1 at (1,1) (dy): bin 1; the rest 0: bin 0
    x[0, 0, 3, 0] = 10.0  # strength 10 at (3,0) and (2,0): above the last edge, the last bin
    mean, var = residual.moments(x)
    strength = uq.edge_strength(x)[0, 0]
    expected = torch.where(strength >= 1.5, 2, torch.where(strength >= 0.5, 1, 0))
    torch.testing.assert_close(var[0, 0], residual.bin_var[expected])
    torch.testing.assert_close(mean[0, 0], residual.bin_mean[expected])
    assert set(expected.flatten().tolist()) == {0, 1, 2}


def test_edge_adaptive_conditioning_is_dense_gaussian_conditioning_with_each_images_moments():
    residual = edge_model(1)
    matrix = torch.randn(9, N, generator=gen(22), dtype=torch.float64)
    op = MatrixOperator(matrix, SHAPE)
    v = 2 * torch.randn(2, *SHAPE, generator=gen(23), dtype=torch.float64)
    y = torch.randn(9, generator=gen(24), dtype=torch.float64).reshape(op.out_shape)
    out = residual.condition_mean(op, v, y, 0.3, tol=1e-10)
    mean, var = residual.moments(v)
    assert not torch.equal(var[0], var[1])
    for b in range(2):
        fixed = uq.GaussianResidual(mean[b], var[b], n_images=10)
        expected, _ = exact_conditional(fixed, matrix, v[b], y, 0.3)
        torch.testing.assert_close(out[b].flatten(), v[b].flatten() + expected, rtol=1e-7, atol=1e-8)
        got = residual.misfit(op, v[b], y, 0.3, tol=1e-12).statistic
        assert got == pytest.approx(fixed.misfit(op, v[b], y, 0.3, tol=1e-12).statistic, rel=1e-8)
    draws = residual.condition_samples(op, v[:1].expand(20_000, *SHAPE), y, 0.3, generator=gen(25), tol=1e-10) - v[:1]
    fixed = uq.GaussianResidual(mean[0], var[0], n_images=10)
    expected, cov = exact_conditional(fixed, matrix, v[0], y, 0.3)
    torch.testing.assert_close(draws.flatten(1).mean(0), expected, rtol=0, atol=0.02)
    torch.testing.assert_close(torch.cov(draws.flatten(1).T), cov, rtol=0, atol=0.03)


def test_edge_adaptive_model_rejects_bad_bins_and_its_digest_differs_from_the_pixel_models():
    residual = edge_model()
    assert residual.digest() != uq.GaussianResidual(residual.mean, residual.var, 10).digest()
    assert residual.digest() == edge_model().digest()
    base = model()
    with pytest.raises(ValueError, match="expected 4 edges and 3 means"):
        uq.EdgeAdaptiveResidual(base.mean, base.var, 10, torch.zeros(3), torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="non-decreasing"):
        uq.EdgeAdaptiveResidual(base.mean, base.var, 10, torch.tensor([0.0, 2.0, 1.0]), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="bin_var: expected finite variances"):
        uq.EdgeAdaptiveResidual(base.mean, base.var, 10, torch.tensor([0.0, 1.0]), torch.zeros(1), -torch.ones(1))
    prior = LinearGaussianPrior(torch.ones(N, 1), data_shape=SHAPE)  # constant projections: one edge strength, 0
    with pytest.raises(ValueError, match="same edge strength"):
        uq.EdgeAdaptiveResidual.fit(prior, torch.randn(5, *SHAPE, generator=gen(26)))
    prior = LinearGaussianPrior(torch.randn(N, 3, generator=gen(27)), data_shape=SHAPE)
    with pytest.raises(ValueError, match="fewer than 2 residual pixels"):
        uq.EdgeAdaptiveResidual.fit(prior, torch.randn(2, *SHAPE, generator=gen(28)), bins=20)
