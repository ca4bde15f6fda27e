"""Generic properties every operator in the registry must have."""

import pytest
import torch

from invprob.operators import check_adjoint
from operator_registry import OPERATORS

NAMES = sorted(OPERATORS)


def _rand(shape, seed, dtype=torch.float64, batch=3):
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("name", NAMES)
def test_adjointness_float64(name):
    op = OPERATORS[name].build()
    report = check_adjoint(op, n_trials=4)
    assert report.relative_error < 1e-5, str(report)


@pytest.mark.parametrize("name", NAMES)
def test_pinv_properties(name):
    entry = OPERATORS[name]
    op = entry.build()
    y = op(_rand(op.in_shape, 1)) + 0.1 * _rand(op.out_shape, 2)
    x = op.pinv(y, tol=1e-10, max_iter=500)
    assert x.shape == (3, *op.in_shape)
    if entry.full_row_rank:
        torch.testing.assert_close(op(x), y, rtol=1e-6, atol=1e-6)
    # A^+ A A^+ = A^+ holds for every operator.
    again = op.pinv(op(x), tol=1e-10, max_iter=500)
    torch.testing.assert_close(again, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_normal_is_adjoint_of_forward(name):
    op = OPERATORS[name].build()
    x = _rand(op.in_shape, 4)
    torch.testing.assert_close(op.normal(x), op.adjoint(op(x)))


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_singles(name):
    op = OPERATORS[name].build()
    x = _rand(op.in_shape, 5)
    y = _rand(op.out_shape, 6)
    for method, arg in ((op.forward, x), (op.adjoint, y), (op.pinv, y)):
        batch = method(arg)
        singles = torch.cat([method(arg[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(batch, singles, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_follows_input_dtype(name, dtype):
    op = OPERATORS[name].build()
    x = _rand(op.in_shape, 7, dtype=dtype)
    y = _rand(op.out_shape, 8, dtype=dtype)
    assert op(x).dtype == dtype
    assert op.adjoint(y).dtype == dtype
    assert op.pinv(y).dtype == dtype


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    op = OPERATORS[name].build()
    x = _rand(op.in_shape, 9, batch=1).requires_grad_(True)
    y = _rand(op.out_shape, 10, batch=1).requires_grad_(True)
    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradcheck(op.adjoint, (y,))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_fixed_seed(name):
    a, b = OPERATORS[name].build(), OPERATORS[name].build()
    x = _rand(a.in_shape, 11)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    a, b = OPERATORS[name].build(), OPERATORS[name].build()
    b.load_state_dict(a.state_dict())
    x = _rand(a.in_shape, 12)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_norm_matches_largest_singular_value(name):
    op = OPERATORS[name].build()
    n = 1
    for s in op.in_shape:
        n *= s
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *op.in_shape)
    matrix = op(eye).reshape(n, -1).T
    expected = float(torch.linalg.matrix_norm(matrix, ord=2))
    assert op.norm(n_iter=500, tol=1e-12) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_shapes_are_rejected(name):
    op = OPERATORS[name].build()
    with pytest.raises(ValueError, match=r"expected shape \(B, "):
        op(torch.zeros(op.in_shape))  # unbatched
    with pytest.raises(ValueError, match="got"):
        op.adjoint(torch.zeros((2, *op.out_shape, 1)))
    bad = torch.zeros((1, *op.out_shape))
    bad.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        op.pinv(bad)
