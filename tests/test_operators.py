"""Operator-specific behaviour: values, bad inputs, noise, user callables, the adjoint check."""

import math

import numpy as np
import pytest
import torch

from invprob.operators import (
    BlockMask,
    Identity,
    LinearOperator,
    RandomGaussian,
    RandomMask,
    SuperResolution,
    add_noise,
    check_adjoint,
    from_callable,
    from_matrix,
    from_physics,
)


def test_random_gaussian_statistics_and_seed():
    op = RandomGaussian((1, 16, 16), 250, seed=4)
    assert op.out_shape == (250,)
    assert op.matrix.std().item() == pytest.approx(1 / math.sqrt(250), rel=0.02)
    assert not torch.equal(op.matrix, RandomGaussian((1, 16, 16), 250, seed=5).matrix)


def test_random_mask_drops_about_p_and_shares_channels():
    op = RandomMask((3, 64, 64), 0.15, seed=0)
    assert op.kept_fraction == pytest.approx(0.85, abs=0.02)
    out = op(torch.ones(1, 3, 64, 64))
    assert torch.equal(out[0, 0], out[0, 2])


def test_block_mask_zeroes_exactly_the_square():
    op = BlockMask((1, 8, 8), 4, center=(2, 5))
    out = op(torch.ones(1, 1, 8, 8))[0, 0]
    assert out[0:4, 3:7].abs().sum() == 0
    assert out.sum() == 64 - 16


def test_superres_averages_blocks_and_pinv_replicates():
    op = SuperResolution((1, 4, 4), 2)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(op(x), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    torch.testing.assert_close(op(op.pinv(op(x))), op(x))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: RandomGaussian((1, 4, 4), 0), "m: expected an int >= 1"),
        (lambda: RandomGaussian((1, 4, 4), 3.5), "m: expected an int"),
        (lambda: RandomGaussian((1, 4, 4), 3, seed=1.5), "seed: expected an int"),
        (lambda: RandomMask((1, 4, 4), 1.0), r"p: expected a drop probability in \[0, 1\)"),
        (lambda: RandomMask((1, 4, 4), -0.1), "p: expected"),
        (lambda: RandomMask((4, 4), 0.1), r"in_shape: expected an image shape \(C, H, W\)"),
        (lambda: BlockMask((1, 8, 8), 9), "does not fit"),
        (lambda: BlockMask((1, 8, 8), 4, center=(0, 0)), "leaves the"),
        (lambda: SuperResolution((1, 10, 10), 4), "does not divide"),
        (lambda: RandomGaussian((1, 0, 4), 3), "in_shape"),
        (lambda: from_matrix(torch.ones(3, 5), (1, 2, 2)), r"matrix: expected shape \(m, 4\)"),
    ],
)
def test_bad_construction_arguments(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_shape_mismatch_message_names_expected_and_received():
    op = RandomGaussian((1, 4, 4), 5)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 1, 4, 4\), got \(2, 1, 4, 5\)"):
        op(torch.zeros(2, 1, 4, 5))
    with pytest.raises(TypeError, match="floating-point"):
        op(torch.zeros(2, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        op(np.zeros((2, 1, 4, 4)))


def test_composition_checks_shapes():
    with pytest.raises(ValueError, match="cannot compose"):
        RandomGaussian((1, 4, 4), 5) @ SuperResolution((1, 8, 8), 4)
    with pytest.raises(ValueError, match="scale"):
        0.0 * Identity((3,))


def test_add_noise_hits_requested_snr():
    y = torch.randn(4, 5000, generator=torch.Generator().manual_seed(0)) * torch.tensor([[1.0], [2.0], [3.0], [0.5]])
    noisy, sigma = add_noise(y, snr_db=30, generator=torch.Generator().manual_seed(1))
    assert sigma.shape == (4,)
    measured = 20 * torch.log10(y.pow(2).mean(1).sqrt() / (noisy - y).pow(2).mean(1).sqrt())
    torch.testing.assert_close(measured, torch.full((4,), 30.0), atol=0.3, rtol=0)
    again, _ = add_noise(y, snr_db=30, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)


def test_add_noise_with_sigma_and_bad_arguments():
    y = torch.zeros(2, 1000)
    noisy, sigma = add_noise(y, sigma=0.1, generator=torch.Generator().manual_seed(0))
    assert noisy.std().item() == pytest.approx(0.1, rel=0.1)
    torch.testing.assert_close(sigma, torch.full((2,), 0.1))
    with pytest.raises(ValueError, match="exactly one"):
        add_noise(y)
    with pytest.raises(ValueError, match="exactly one"):
        add_noise(y, snr_db=30, sigma=0.1)
    with pytest.raises(ValueError, match="sigma"):
        add_noise(y, sigma=-1.0)
    with pytest.raises(ValueError, match="non-finite"):
        add_noise(torch.full((1, 3), float("nan")), sigma=0.1)


def test_from_callable_nonlinear_forward_with_autograd():
    op = from_callable(lambda x: x.flatten(1) ** 2, (1, 2, 2))
    assert op.out_shape == (4,)
    x = torch.ones(1, 1, 2, 2, requires_grad=True)
    op(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))
    with pytest.raises(NotImplementedError, match="no adjoint.*adjoint="):
        op.adjoint(torch.ones(1, 4))
    with pytest.raises(NotImplementedError, match="no pseudo-inverse"):
        op.pinv(torch.ones(1, 4))


def test_from_callable_checks_user_output_shape():
    op = from_callable(lambda x: x.flatten(1)[:, :3] if x.shape[0] == 1 else x.flatten(1), (1, 2, 2))
    with pytest.raises(ValueError, match="output of the user's forward function"):
        op(torch.ones(2, 1, 2, 2))


def test_from_physics_uses_deepinv_style_methods():
    class Physics:
        def A(self, x):
            return 2 * x

        def A_adjoint(self, y):
            return 2 * y

    op = from_physics(Physics(), (1, 3, 3))
    y = torch.ones(2, 1, 3, 3)
    torch.testing.assert_close(op.adjoint(y), 2 * y)
    with pytest.raises(TypeError, match="callable method A"):
        from_physics(object(), (1, 3, 3))


class _ScaledAdjoint(LinearOperator):
    """A deliberately wrong operator: its adjoint is 3 A^T."""

    def __init__(self):
        super().__init__((5,), (4,))
        self.register_buffer("m", torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64))

    def _forward(self, x):
        return x @ self.m.to(x).T

    def _adjoint(self, y):
        return 3.0 * y @ self.m.to(y)


def test_check_adjoint_reports_scaled_adjoint():
    report = check_adjoint(_ScaledAdjoint())
    assert report.relative_error > 0.1
    assert report.is_scaled
    assert report.scale == pytest.approx(3.0, rel=1e-9)
    assert "scaled by 3" in str(report)
    exact = check_adjoint(RandomGaussian((1, 4, 4), 6))
    assert exact.relative_error < 1e-12 and not exact.is_scaled


def test_pinv_is_minimum_norm_for_wide_matrices():
    op = RandomGaussian((1, 4, 4), 6)
    y = torch.randn(2, 6, dtype=torch.float64)
    x = op.pinv(y)
    expected = torch.linalg.lstsq(op.matrix, y.T).solution.T  # minimum-norm for underdetermined
    torch.testing.assert_close(x.flatten(1), expected)


def test_cgls_pinv_matches_closed_form():
    op = SuperResolution((1, 8, 8), 2) @ Identity((1, 8, 8))  # Composition: pinv by CGLS
    y = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(op.pinv(y, tol=1e-12), SuperResolution((1, 8, 8), 2).pinv(y))
    with pytest.raises(ValueError, match="max_iter"):
        op.pinv(y, max_iter=0)


def _blur(**kwargs):
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64).view(1, 1, 3, 3) / 16
    forward = lambda x: torch.nn.functional.conv2d(x, kernel.to(x), padding=1)  # noqa: E731
    adjoint = lambda y: torch.nn.functional.conv_transpose2d(y, kernel.to(y), padding=1)  # noqa: E731
    return forward, adjoint


def test_from_callable_with_adjoint_is_a_linear_operator():
    forward, adjoint = _blur()
    op = from_callable(forward, (1, 6, 6), adjoint=adjoint, dtype=torch.float64)
    assert isinstance(op, LinearOperator)
    dense = op(torch.eye(36, dtype=torch.float64).reshape(36, 1, 6, 6)).reshape(36, 36).T
    assert op.norm(n_iter=500, tol=1e-12) == pytest.approx(float(torch.linalg.matrix_norm(dense, ord=2)), rel=1e-6)
    assert check_adjoint(op).relative_error < 1e-12
    y = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = (torch.linalg.pinv(dense) @ y.flatten(1).T).T.reshape(2, 1, 6, 6)
    torch.testing.assert_close(op.pinv(y, tol=1e-12, max_iter=500), expected, rtol=1e-6, atol=1e-6)


def test_from_callable_linear_true_takes_the_adjoint_from_autograd():
    forward, adjoint = _blur()
    auto = from_callable(forward, (1, 6, 6), linear=True)
    y = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(auto.adjoint(y), adjoint(y))
    assert auto.probe_like()[1] == torch.float32
    assert check_adjoint(auto).relative_error < 1e-5
    # differentiable through the autograd adjoint (second order)
    y64 = y.double().requires_grad_(True)
    auto64 = from_callable(forward, (1, 6, 6), linear=True, dtype=torch.float64)
    assert torch.autograd.gradcheck(auto64.adjoint, (y64[:1],))
    with pytest.raises(TypeError, match="linear: expected True, False or None"):
        from_callable(forward, (1, 6, 6), linear="yes")


def test_from_callable_linear_false_keeps_a_general_operator():
    forward, adjoint = _blur()
    op = from_callable(forward, (1, 6, 6), adjoint=adjoint, linear=False)
    assert not isinstance(op, LinearOperator)
    torch.testing.assert_close(op.adjoint(torch.ones(1, 1, 6, 6)), adjoint(torch.ones(1, 1, 6, 6)))


def test_from_physics_linear_stand_in_is_a_linear_operator():
    class LinearPhysics:  # deepinv's LinearPhysics interface: A, A_adjoint
        def A(self, x):
            return x[..., ::2]

        def A_adjoint(self, y):
            out = torch.zeros((*y.shape[:-1], 2 * y.shape[-1]), dtype=y.dtype)
            out[..., ::2] = y
            return out

    op = from_physics(LinearPhysics(), (1, 4, 4))
    assert isinstance(op, LinearOperator)
    assert op.out_shape == (1, 4, 2)
    assert op.norm() == pytest.approx(1.0, rel=1e-6)
    assert check_adjoint(op).relative_error < 1e-6
    y = torch.ones(1, 1, 4, 2)
    torch.testing.assert_close(op(op.pinv(y)), y)


def test_check_adjoint_refuses_a_nonlinear_operator():
    op = from_callable(lambda x: x**2, (1, 2, 2))
    with pytest.raises(TypeError, match=r"op: expected a LinearOperator .*got CallableOperator; .*adjoint=fn_T"):
        check_adjoint(op)


def test_tv_accepts_a_user_linear_operator_without_step():
    forward, adjoint = _blur()
    op = from_callable(forward, (1, 6, 6), adjoint=adjoint)
    from invprob.solvers import solve

    x = torch.zeros(1, 1, 6, 6)
    x[..., 2:4, 2:4] = 1.0
    result = solve(op, None, op(x), "tv", iterations=3)
    assert result.x_hat.shape == (1, 1, 6, 6)


def test_readme_operator_examples_run_as_written():
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Forward operators") : text.index("### Priors")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "README.md (operators)", "exec"), {"__name__": "readme"})


def test_cast_copies_are_made_once_and_follow_buffer_changes():
    op = RandomGaussian((1, 4, 4), 6)
    x = torch.randn(2, 1, 4, 4)
    first = op.cast_buffer("matrix", x)
    assert first.dtype == torch.float32
    assert op.cast_buffer("matrix", x) is first  # no recast on the next call
    assert op.cast_buffer("matrix", x.double()) is op.matrix
    other = RandomGaussian((1, 4, 4), 6, seed=1)
    op.load_state_dict(other.state_dict())
    torch.testing.assert_close(op(x), other(x))
    op.matrix.mul_(2.0)
    torch.testing.assert_close(op(x), 2 * other(x))
    op.double()
    assert op(x.double()).dtype == torch.float64 and op(x).dtype == torch.float32
