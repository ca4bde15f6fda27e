"""Bad inputs to operators give one-line errors naming the argument, what was expected and what came.

One table of (call, exception type, words the message must contain), plus the documented
behaviour for non-finite inputs and the lazy pseudo-inverse of dense matrices.
"""

import pytest
import torch

from invprob.operators import (
    LimitedAngleCT,
    RandomGaussian,
    add_noise,
    check_adjoint,
    from_callable,
    from_matrix,
)
from operator_registry import OPERATORS

NAMES = sorted(OPERATORS)


def _ct():
    return LimitedAngleCT((1, 16, 16), angles=[30.0, 90.0, 150.0])


def _nan_matrix():
    m = torch.ones(3, 4)
    m[1, 2] = float("nan")
    return m


def _per_operator_cases():
    cases = []
    for name in NAMES:
        build = OPERATORS[name].build
        cases += [
            pytest.param(lambda b=build: b()(torch.zeros((0, *b().in_shape))), ValueError,
                         ["x:", "non-empty batch", "(0, "], id=f"{name}-forward-empty"),
            pytest.param(lambda b=build: b().adjoint(torch.zeros((0, *b().out_shape))), ValueError,
                         ["y:", "non-empty batch"], id=f"{name}-adjoint-empty"),
            pytest.param(lambda b=build: b().pinv(torch.zeros((0, *b().out_shape))), ValueError,
                         ["y:", "non-empty batch"], id=f"{name}-pinv-empty"),
            pytest.param(lambda b=build: b()(torch.zeros((1, *b().in_shape), dtype=torch.complex64)), TypeError,
                         ["x:", "real floating-point", "complex64"], id=f"{name}-forward-complex"),
            pytest.param(lambda b=build: b().adjoint(torch.zeros((1, *b().out_shape), dtype=torch.complex128)), TypeError,
                         ["y:", "real floating-point", "complex128"], id=f"{name}-adjoint-complex"),
            pytest.param(lambda b=build: b().pinv(torch.zeros((1, *b().out_shape), dtype=torch.complex64)), TypeError,
                         ["y:", "real floating-point"], id=f"{name}-pinv-complex"),
            pytest.param(lambda b=build: b().pinv(torch.full((1, *b().out_shape), float("nan"))), ValueError,
                         ["y:", "non-finite"], id=f"{name}-pinv-nan"),
        ]
    return cases


CASES = _per_operator_cases() + [
    pytest.param(lambda: _ct()(torch.zeros(0, 1, 16, 16)), ValueError, ["x:", "non-empty batch", "(0, 1, 16, 16)"], id="ct-empty"),
    pytest.param(lambda: _ct().fbp(torch.zeros(0, 1, 3, 16)), ValueError, ["y:", "non-empty batch"], id="ct-fbp-empty"),
    pytest.param(lambda: _ct().fbp(torch.zeros(1, 1, 3, 16, dtype=torch.complex64)), TypeError, ["y:", "real"], id="ct-fbp-complex"),
    pytest.param(lambda: RandomGaussian((1, 32, 32), 10**9), MemoryError,
                 ["m:", "1000000000", "1000000000 x 1024 float64", "GiB", "smaller m"], id="gauss-huge-m"),
    pytest.param(lambda: from_matrix(_nan_matrix(), (1, 2, 2)), ValueError, ["matrix:", "1 non-finite"], id="matrix-nan"),
    pytest.param(lambda: from_matrix(torch.ones(3, 4, dtype=torch.complex64), (1, 2, 2)), TypeError,
                 ["matrix:", "real matrix", "complex64"], id="matrix-complex"),
    pytest.param(lambda: add_noise(torch.ones(2, 5, dtype=torch.int64), snr_db=30), TypeError,
                 ["y:", "real floating-point", "int64"], id="noise-int"),
    pytest.param(lambda: add_noise(torch.ones(2, 5, dtype=torch.complex64), snr_db=30), TypeError,
                 ["y:", "complex64"], id="noise-complex"),
    pytest.param(lambda: add_noise(torch.zeros(3, 5), snr_db=30), ValueError,
                 ["y:", "[0, 1, 2]", "all zero", "sigma="], id="noise-all-zero"),
    pytest.param(lambda: add_noise(torch.cat([torch.ones(1, 5), torch.zeros(1, 5)]), snr_db=30), ValueError,
                 ["y:", "[1]", "all zero"], id="noise-one-zero-sample"),
    pytest.param(lambda: add_noise(torch.zeros(0, 5), sigma=0.1), ValueError, ["y:", "non-empty batch"], id="noise-empty"),
    pytest.param(lambda: add_noise(torch.ones(1, 5), snr_db=30, generator=5), TypeError,
                 ["generator:", "torch.Generator", "int 5"], id="noise-generator"),
    pytest.param(lambda: add_noise(torch.ones(1, 5), snr_db=True), TypeError, ["snr_db:", "bool"], id="noise-snr-bool"),
    pytest.param(lambda: add_noise(torch.ones(1, 5), snr_db=float("inf")), ValueError, ["snr_db:", "finite"], id="noise-snr-inf"),
    pytest.param(lambda: check_adjoint(from_callable(lambda x: x**2, (1, 2, 2))), TypeError,
                 ["op:", "LinearOperator", "CallableOperator"], id="check-adjoint-nonlinear"),
    pytest.param(lambda: from_callable(lambda x: x, (1, 2, 2), adjoint=3), TypeError, ["adjoint:", "callable", "int"],
                 id="callable-adjoint-not-callable"),
    pytest.param(lambda: from_callable(lambda x: x, (1, 2, 2), adjoint=lambda y: y[:, :, :1]).adjoint(torch.ones(1, 1, 2, 2)),
                 ValueError, ["output of the user's adjoint function", "(1, 1, 1, 2)"], id="callable-adjoint-bad-shape"),
]


@pytest.mark.parametrize("call, error, words", CASES)
def test_bad_input_gives_a_one_line_error(call, error, words):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_values_propagate_through_forward_and_adjoint(name):
    """Documented: forward/adjoint are plain linear algebra (no check); pinv refuses (table above)."""
    op = OPERATORS[name].build()
    x = torch.ones((1, *op.in_shape), dtype=torch.float64)
    x.view(-1)[0] = float("nan")
    assert torch.isnan(op(x)).any()
    y = torch.ones((1, *op.out_shape), dtype=torch.float64)
    y.view(-1)[0] = float("inf")
    assert not torch.isfinite(op.adjoint(y)).all()


def test_dense_pinv_is_computed_on_first_use_only(monkeypatch):
    calls = []
    real = torch.linalg.pinv
    monkeypatch.setattr(torch.linalg, "pinv", lambda m: calls.append(m.shape) or real(m))
    op = RandomGaussian((1, 8, 8), 20)
    assert calls == []
    y = op(torch.randn(2, 1, 8, 8, dtype=torch.float64))
    first = op.pinv(y)
    op.pinv(y.float())
    assert calls == [(20, 64)]
    torch.testing.assert_close(op(first), y)
    assert "matrix_pinv" not in op.state_dict()


def test_dense_pinv_falls_back_to_cgls_when_it_does_not_fit(monkeypatch):
    import invprob.operators.matrix as matrix_module

    op = RandomGaussian((1, 8, 8), 20)
    y = op(torch.randn(2, 1, 8, 8, dtype=torch.float64))
    expected = op.pinv(y)
    small = RandomGaussian((1, 8, 8), 20)
    monkeypatch.setattr(matrix_module, "available_memory", lambda: 1000)
    torch.testing.assert_close(small.pinv(y, tol=1e-12, max_iter=500), expected)
    assert small.matrix_pinv is None
