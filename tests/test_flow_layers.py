"""Flow layers: inverses, log-determinants against brute-force Jacobians, initialisation, errors."""

from __future__ import annotations

import pytest
import torch

from invprob.priors.layers import (
    ActNorm,
    AffineCoupling,
    FlowSequence,
    InjectiveConv1x1,
    InjectiveRevNetStep,
    InvertibleConv1x1,
    RevNetStep,
    Squeeze,
    Upsqueeze,
    bounded_scale,
)

LAYERS = {
    "actnorm": (lambda: ActNorm(3), (3, 4, 4), True),
    "conv1x1": (lambda: InvertibleConv1x1(3), (3, 4, 4), True),
    "coupling-channel": (lambda: AffineCoupling(4, 4, mask="channel", hidden=8), (4, 4, 4), True),
    "coupling-channel-flip-odd": (lambda: AffineCoupling(3, 4, mask="channel", flip=True, hidden=8), (3, 4, 4), True),
    "coupling-checkerboard": (lambda: AffineCoupling(1, 4, mask="checkerboard", hidden=8), (1, 4, 4), True),
    "coupling-checkerboard-flip": (lambda: AffineCoupling(2, 4, mask="checkerboard", flip=True, hidden=8), (2, 4, 4), True),
    "coupling-1x1": (lambda: AffineCoupling(4, 1, mask="channel", hidden=8, depth=0), (4, 1, 1), True),
    "squeeze": (lambda: Squeeze(), (1, 4, 4), True),
    "upsqueeze": (lambda: Upsqueeze(), (4, 2, 2), True),
    "revnet": (lambda: RevNetStep(2, 4, hidden=8), (2, 4, 4), True),
    "injective-linear": (lambda: InjectiveConv1x1(2, variant="linear", gamma=0.0), (2, 3, 3), False),
    "injective-linear-x3": (lambda: InjectiveConv1x1(2, expansion=3, variant="linear", gamma=0.0), (2, 2, 2), False),
    "injective-relu": (lambda: InjectiveConv1x1(2, variant="relu", gamma=0.0), (2, 3, 3), False),
    "injective-relu-x4": (lambda: InjectiveConv1x1(2, expansion=4, variant="relu", gamma=0.0), (2, 2, 2), False),
    "injective-revnet-linear": (lambda: InjectiveRevNetStep(2, 2, variant="linear", gamma=0.0, hidden=8), (2, 2, 2), False),
    "injective-revnet-relu": (lambda: InjectiveRevNetStep(2, 2, variant="relu", gamma=0.0, hidden=8), (2, 2, 2), False),
    "injective-revnet-1ch": (lambda: InjectiveRevNetStep(1, 2, gamma=0.0, hidden=8), (1, 2, 2), False),
}


def _build(name):
    """The layer in float64 with all parameters randomised (so couplings are not constant maps)."""
    factory, shape, bijective = LAYERS[name]
    torch.manual_seed(0)
    layer = factory().double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        layer(torch.randn(5, *shape, generator=g, dtype=torch.float64))  # data-dependent inits
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer, shape, bijective


def _x(shape, n=3, seed=2):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_inverse_undoes_forward(name):
    layer, shape, bijective = _build(name)
    x = _x(shape)
    y, logdet = layer(x)
    assert logdet.shape == (3,)
    x_back, logdet_back = layer.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logdet_back, logdet, rtol=1e-5, atol=1e-5)
    assert y.shape[1:] == layer.out_shape(shape)
    if bijective:
        y2 = _x(layer.out_shape(shape), seed=3)
        torch.testing.assert_close(layer(layer.inverse(y2)[0])[0], y2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_logdet_matches_brute_force_jacobian(name):
    layer, shape, _ = _build(name)
    x = _x(shape, n=2)
    _, logdet = layer(x)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0].flatten(), x[i]).reshape(-1, x[i].numel())
        expected = 0.5 * torch.linalg.slogdet(jac.T @ jac)[1]
        torch.testing.assert_close(logdet[i], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["linear", "relu"])
def test_tikhonov_pseudo_inverse_solves_the_regularised_least_squares(variant):
    torch.manual_seed(0)
    layer = InjectiveConv1x1(3, variant=variant, gamma=0.1).double()
    with torch.no_grad():
        layer.weight.add_(0.5 * torch.randn_like(layer.weight))
    y = _x((6, 2, 2))  # generic point, off the range
    x, _ = layer.inverse(y)
    w = layer.weight
    target = y if variant == "linear" else y[:, :3] - y[:, 3:]
    # normal equations of min ||W x - target||^2 + gamma^2 ||x||^2 at every pixel
    lhs = torch.einsum("oc,od,bdhw->bchw", w, w, x) + 0.01 * x
    rhs = torch.einsum("oc,bohw->bchw", w, target)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variant,rows", [("linear", 8), ("relu", 4)])
def test_injective_init_has_orthonormal_columns(variant, rows):
    layer = InjectiveConv1x1(2, expansion=4, variant=variant).double()
    assert layer.weight.shape == (rows, 2)
    torch.testing.assert_close(layer.weight.T @ layer.weight, torch.eye(2, dtype=torch.float64))
    assert torch.all(layer(_x((2, 3, 3)))[1].abs() < 1e-5)  # W^T W = I up to float32 rounding


def test_relu_variant_recovers_the_linear_response():
    layer = InjectiveConv1x1(2, variant="relu").double()
    x = _x((2, 3, 3))
    y, _ = layer(x)
    assert torch.all(y >= 0) and y.shape == (3, 4, 3, 3)
    torch.testing.assert_close(y[:, :2] - y[:, 2:], torch.einsum("oc,bchw->bohw", layer.weight, x))


def test_actnorm_data_dependent_init_standardises_the_data_side_once():
    layer = ActNorm(2).double()
    data = 3.0 + 5.0 * _x((2, 4, 4), n=8)
    out, _ = layer.inverse(data)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3), unbiased=False), torch.ones(2, dtype=torch.float64))
    assert bool(layer.initialized)
    before = layer.log_scale.detach().clone()
    layer.inverse(data * 10)
    torch.testing.assert_close(layer.log_scale.detach(), before, rtol=0, atol=0)
    fresh = ActNorm(2).double()
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh.inverse(data)[0], out, rtol=0, atol=0)


def test_actnorm_generative_init_standardises_the_output():
    layer = ActNorm(2).double()
    y, _ = layer(2.0 - 4.0 * _x((2, 3, 3), n=6))
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)


def test_coupling_scale_is_bounded_away_from_zero():
    h = torch.tensor([-1e6, -50.0, 0.0, 50.0, 1e6], dtype=torch.float64)
    s = bounded_scale(h)
    assert torch.all(s >= 0.01) and torch.all(s <= 1.0)
    assert abs(float(s[2]) - (0.01 + 0.99 * torch.sigmoid(torch.tensor(2.0, dtype=torch.float64)).item())) < 1e-12


def test_coupling_scale_range_around_one_starts_at_identity_scale():
    h = torch.tensor([-1e6, 0.0, 1e6], dtype=torch.float64)
    s = bounded_scale(h, (0.5, 2.0))
    torch.testing.assert_close(s, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("scale_range", [(0.0, 1.0), (1.0, 2.0), (0.5, 0.4), (0.1, 0.5, 2.0)])
def test_coupling_rejects_bad_scale_range(scale_range):
    with pytest.raises(ValueError, match="scale_range"):
        AffineCoupling(4, 4, scale_range=scale_range)


def test_coupling_starts_as_a_constant_scaling():
    layer = AffineCoupling(4, 4, hidden=8).double()
    x = _x((4, 4, 4))
    y, logdet = layer(x)
    s = float(bounded_scale(torch.tensor(0.0, dtype=torch.float64)))
    torch.testing.assert_close(y[:, :2], x[:, :2])
    torch.testing.assert_close(y[:, 2:], x[:, 2:] * s)
    torch.testing.assert_close(logdet, torch.full((3,), 32 * torch.log(torch.tensor(s, dtype=torch.float64)).item(), dtype=torch.float64))


def test_sequence_sums_logdets_and_inverts():
    torch.manual_seed(0)
    seq = FlowSequence([InjectiveRevNetStep(1, 2, expansion=4, gamma=0.0, hidden=4), RevNetStep(4, 2, hidden=4), Upsqueeze()]).double()
    x = _x((1, 2, 2))
    y, total = seq(x)
    assert y.shape == (3, 1, 4, 4) and seq.out_shape((1, 2, 2)) == (1, 4, 4)
    torch.testing.assert_close(total, sum(ld for _, ld in seq.forward_layers(x)))
    torch.testing.assert_close(seq.inverse(y)[0], x, rtol=1e-6, atol=1e-6)


def test_bad_configurations_and_shapes_raise():
    with pytest.raises(ValueError, match="variant"):
        InjectiveConv1x1(2, variant="tanh")
    with pytest.raises(ValueError, match="expansion"):
        InjectiveConv1x1(2, expansion=3, variant="relu")
    with pytest.raises(ValueError, match="gamma"):
        InjectiveConv1x1(2, gamma=-1.0)
    with pytest.raises(ValueError, match="mask"):
        AffineCoupling(2, 4, mask="stripes")
    with pytest.raises(ValueError, match="at least 2 channels"):
        AffineCoupling(1, 4, mask="channel")
    with pytest.raises(ValueError, match="even"):
        Squeeze()(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="multiple of 4"):
        Upsqueeze()(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="input channels"):
        InjectiveConv1x1(2)(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="channels to invert"):
        InjectiveConv1x1(2).inverse(torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("make", [lambda: InjectiveConv1x1(3, expansion=2), lambda: InvertibleConv1x1(3)])
def test_weight_factorisations_are_cached_only_while_frozen_and_unchanged(make):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(2, 3, 4, 4)
    y, logdet = layer(x)
    layer.weight.requires_grad_(False)
    assert torch.equal(layer(x)[1], logdet.detach())
    assert torch.equal(layer(x)[1], layer(x)[1]) and len(layer._weight_cache) >= 1
    with torch.no_grad():
        layer.weight.mul_(1.5)  # an in-place change bumps the version counter: the cache must miss
    changed = layer(x)[1]
    expected = logdet + 3 * 16 * torch.log(torch.tensor(1.5))  # c * H W * log 1.5 for both layers
    assert torch.allclose(changed, expected, atol=1e-4)
    assert torch.allclose(layer.inverse(layer(x)[0])[0], x, atol=1e-4)


def test_weight_cache_keeps_gradients_of_trainable_weights_and_survives_inference_mode():
    torch.manual_seed(0)
    layer = InjectiveConv1x1(3, expansion=2)
    x = torch.randn(2, 3, 4, 4)
    layer.inverse(layer(x)[0])[1].sum().backward()  # trainable: never cached, gradients reach W
    assert layer.weight.grad is not None and not layer.__dict__.get("_weight_cache")
    layer.weight.requires_grad_(False)
    with torch.inference_mode():
        layer.inverse(layer(x)[0])
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(layer.inverse(layer(xr)[0])[0].sum(), xr)  # no inference tensor in the graph
    assert torch.allclose(grad, torch.ones_like(x), atol=1e-4)
