"""solve(): every bad call fails before any work with one line naming the argument, the expected and the received value."""

import numpy as np
import pytest
import torch
from solver_problems import linear_problem

from invprob.solvers import list_methods, solve

P = linear_problem()
QUIET = dict(progress=False)

CASES = [
    ("generator=5", dict(generator=5), TypeError, ["generator", "torch.Generator", "int"]),
    ("callback=5", dict(callback=5), TypeError, ["callback", "callable", "int"]),
    ("iterations=True", dict(iterations=True), ValueError, ["iterations", "int", "bool"]),
    ("empty batch", dict(y=P.y[:0]), ValueError, ["y", "empty batch"]),
    ("complex y", dict(y=P.y.to(torch.complex64)), TypeError, ["y", "complex"]),
    ("x_init batch", dict(x_init=P.x[:1]), ValueError, ["x_init", "2 start(s)", "got 1"]),
    ("x_init shape", dict(x_init=torch.zeros(2, 64)), ValueError, ["x_init", "expected shape"]),
    ("NaN in y", dict(y=torch.full_like(P.y, float("nan"))), ValueError, ["y", "non-finite"]),
    ("unknown option", dict(step_size=1.0), ValueError, ["step_size", "Valid options"]),
    ("unknown method", dict(method="ifflow"), ValueError, ["method", "ifflow", "valid methods"]),
]


@pytest.mark.parametrize("label, change, error, words", CASES, ids=[c[0] for c in CASES])
def test_bad_calls_name_what_was_wrong(label, change, error, words):
    call = dict(op=P.op, prior=P.prior, y=P.y, method="iflow", iterations=3, **QUIET)
    call.update(change)
    with pytest.raises(error) as info:
        solve(**call)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{label}: {word!r} missing from {message!r}"


def test_float64_and_numpy_inputs_are_cast_to_the_priors_dtype():
    result = solve(P.op, P.prior, P.y.double().numpy(), "iflow", iterations=2, **QUIET)
    assert result.x_hat.dtype == P.prior.dtype and isinstance(result.x_hat, torch.Tensor)
    assert np.isfinite(result.x_hat.numpy()).all()


@pytest.mark.parametrize("method", list_methods(("map", "baseline")))
def test_map_and_baseline_methods_follow_the_callback_contract(method):
    """Iterative methods call the callback once per iteration and stop when it returns True; every
    method reports its objective as history["loss"], one value per iteration run."""
    calls = []

    def stop_at_two(iteration, x, info):
        calls.append((iteration, tuple(x.shape), "loss" in info))
        return iteration == 2

    prior = P.prior if method != "dip" else None
    options = dict(iterations=50, **QUIET) if method != "pinv" else {}
    if method == "dip":
        options.update(channels=4)
    result = solve(P.op if method != "dip" else _identity(), prior, P.y if method != "dip" else P.x, method,
                   callback=stop_at_two, **options)
    if method == "pinv":
        assert calls == [] and result.history == {}
        return
    assert [c[0] for c in calls] == [0, 1, 2]
    assert all(c[1][0] == 2 and c[2] for c in calls)
    assert len(result.history["loss"]) == 3


def _identity():
    from invprob.operators import Identity

    return Identity(P.x.shape[1:])
