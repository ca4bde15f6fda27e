"""LimitedAngleCT: agreement with scikit-image / astra, back-ends, FBP, caches and bad inputs."""

import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from invprob.operators import LimitedAngleCT, check_adjoint
from invprob.operators.radon import cache as radon_cache
from invprob.operators.ct import default_angles, ramp_filter


def _shepp_logan(n):
    return resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)


def _ellipses(n, seed=0):
    """A few smooth (C^1, compactly supported) ellipses inside the inscribed circle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
    img = np.zeros((n, n))
    for _ in range(5):
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        a, b = rng.uniform(0.1, 0.3, 2)
        phi = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(phi) + (yy - cy) * np.sin(phi)) / a
        v = (-(xx - cx) * np.sin(phi) + (yy - cy) * np.cos(phi)) / b
        img += rng.uniform(0.2, 1.0) * np.clip(1 - u**2 - v**2, 0, None) ** 2
    return img


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _batch(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float64))[None, None]


def test_defaults_are_the_papers_setup():
    op = LimitedAngleCT((1, 32, 32))
    np.testing.assert_allclose(op.angles, np.linspace(30, 150, 30))
    assert op.n_detectors == 32
    assert op.out_shape == (1, 30, 32)
    assert op.backend_name == "matrix"
    assert "30 in [30°, 150°]" in repr(op)


@pytest.mark.parametrize("n, n_det", [(64, None), (65, None), (48, 70), (48, 30)])
@pytest.mark.parametrize("phantom", [_shepp_logan, _ellipses])
def test_agrees_with_skimage_radon(n, n_det, phantom):
    from skimage.transform import radon

    op = LimitedAngleCT((1, n, n), n_detectors=n_det)
    img = phantom(n)
    ours = op(_batch(img))[0, 0].numpy()
    # The documented mapping, spelled out for the default detector: transpose skimage's
    # (detector, angle) sinogram; rotation centre and bin 0 offset are both n // 2.
    if n_det is None:
        assert _rel(ours, radon(img, theta=op.angles, circle=True).T) < 0.02
    assert _rel(ours, op.geometry.skimage_sinogram(img)) < 0.02


def test_geometry_orientation():
    """A point right of and above the centre projects to s = dx cos t + dy sin t."""
    n = 33
    img = np.zeros((n, n))
    img[16 - 5, 16 + 9] = 1.0  # x = 9, y = 5
    op = LimitedAngleCT((1, n, n), angles=[0.0, 90.0, 45.0])
    sino = op(_batch(img))[0, 0]
    s = torch.arange(n) - n // 2
    centre_of_mass = (sino * s).sum(1) / sino.sum(1)
    expected = [9.0, 5.0, (9 + 5) / np.sqrt(2)]
    # Exact on the axes; at 45° bilinear sampling of a single pixel blurs it by a few hundredths.
    np.testing.assert_allclose(centre_of_mass.numpy(), expected, atol=0.05)


@pytest.mark.parametrize("n", [32, 47])
def test_matrix_and_grid_agree(n):
    matrix = LimitedAngleCT((1, n, n), backend="matrix")
    grid = LimitedAngleCT((1, n, n), backend="grid")
    x = _batch(_ellipses(n)).repeat(2, 1, 1, 1)
    y = torch.randn((2, *matrix.out_shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert _rel(grid(x), matrix(x)) < 0.01
    assert _rel(grid.adjoint(y), matrix.adjoint(y)) < 0.01
    assert check_adjoint(grid, n_trials=3).relative_error < 1e-10


def test_grid_backend_float32_gradients_use_the_adjoint():
    op = LimitedAngleCT((2, 24, 24), backend="grid")
    x = torch.randn((3, *op.in_shape), requires_grad=True)
    y = torch.randn((3, *op.out_shape))
    (op(x) * y).sum().backward()
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, op.adjoint(y), rtol=1e-5, atol=1e-5)


def test_second_derivatives():
    op = LimitedAngleCT((1, 8, 8), angles=[10.0, 70.0, 130.0])
    x = torch.randn((1, *op.in_shape), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: op(t) ** 2, (x,))


def test_channels_are_projected_independently():
    op = LimitedAngleCT((2, 16, 16), angles=[0.0, 60.0, 120.0])
    single = LimitedAngleCT((1, 16, 16), angles=[0.0, 60.0, 120.0])
    x = torch.randn((3, 2, 16, 16), dtype=torch.float64)
    y = op(x)
    torch.testing.assert_close(y[:, 1:], single(x[:, 1:]))
    torch.testing.assert_close(op.adjoint(y)[:, :1], single.adjoint(y[:, :1]))


def test_fbp_reconstructs_full_angle_shepp_logan():
    n = 128
    op = LimitedAngleCT((1, n, n), angles=np.arange(180.0))
    x = _batch(_shepp_logan(n))
    recon = op.fbp(op(x))
    psnr = 10 * np.log10(1.0 / float(((recon - x) ** 2).mean()))
    assert psnr > 25.0


def test_ramp_filter_is_the_ram_lak_convolution():
    y = torch.randn(3, 11, dtype=torch.float64)
    k = np.arange(-10, 11)
    kernel = np.where(k % 2 == 1, -1.0 / (np.pi * np.maximum(np.abs(k), 1)) ** 2, 0.0)
    kernel[10] = 0.25
    expected = np.stack([np.convolve(row, kernel)[10:21] for row in y.numpy()])
    np.testing.assert_allclose(ramp_filter(y).numpy(), expected, atol=1e-12)


def test_pinv_beats_fbp_on_limited_angles():
    op = LimitedAngleCT((1, 24, 24))
    x = _batch(_ellipses(24))
    y = op(x)
    x_ls = op.pinv(y, tol=1e-8, max_iter=200)
    x_fbp = op.fbp(y)
    assert _rel(op(x_ls), y) < 1e-3 < _rel(op(x_fbp), y)
    assert _rel(x_ls, x) < _rel(x_fbp, x)


def test_disk_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(radon_cache, "_MEMORY_CACHE", radon_cache.OrderedDict())
    first = LimitedAngleCT((1, 20, 20), angles=[5.0, 50.0], cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("ct-") and files[0].suffix == ".npz"
    radon_cache._MEMORY_CACHE.clear()

    def fail(geom):
        raise AssertionError("matrix rebuilt instead of read from the disk cache")

    monkeypatch.setattr(radon_cache, "build_system_matrix", fail)
    second = LimitedAngleCT((1, 20, 20), angles=[5.0, 50.0], cache_dir=tmp_path)
    assert (second.backend.matrix != first.backend.matrix).nnz == 0
    assert list(tmp_path.iterdir()) == files


def test_memory_cache_shares_the_matrix():
    a = LimitedAngleCT((1, 20, 20), angles=[1.0, 2.0])
    b = LimitedAngleCT((1, 20, 20), angles=[1.0, 2.0])
    assert a.backend.matrix is b.backend.matrix


def test_auto_picks_grid_above_the_budget():
    assert LimitedAngleCT((1, 16, 16), memory_budget=1000).backend_name == "grid"
    with pytest.raises(MemoryError, match="backend='grid'"):
        LimitedAngleCT((1, 16, 16), backend="matrix", memory_budget=1000)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(angles=[]), ValueError, "at least one angle"),
        (dict(angles=[[10.0, 20.0]]), ValueError, "1-D"),
        (dict(angles=[10.0, 180.0]), ValueError, r"\[0, 180\)"),
        (dict(angles=[-1.0]), ValueError, r"\[0, 180\)"),
        (dict(angles=[float("nan")]), ValueError, r"\[0, 180\)"),
        (dict(angles="abc"), TypeError, "angles"),
        (dict(in_shape=(1, 16, 12)), ValueError, "square"),
        (dict(in_shape=(16, 16)), ValueError, r"\(C, H, W\)"),
        (dict(n_detectors=0), ValueError, "n_detectors"),
        (dict(n_detectors=2.5), TypeError, "n_detectors"),
        (dict(backend="gpu"), ValueError, "backend"),
        (dict(cache_dir=3), TypeError, "cache_dir"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(in_shape=(1, 16, 16))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        LimitedAngleCT(**args)


def test_wrong_input_size_is_rejected():
    op = LimitedAngleCT((1, 16, 16))
    with pytest.raises(ValueError, match=r"expected shape \(B, 1, 16, 16\), got \(2, 1, 15, 15\)"):
        op(torch.zeros(2, 1, 15, 15))
    with pytest.raises(ValueError, match=r"expected shape \(B, 1, 30, 16\)"):
        op.fbp(torch.zeros(2, 1, 16, 30))


def test_skimage_helper_rejects_wrong_image():
    with pytest.raises(ValueError, match="image"):
        LimitedAngleCT((1, 16, 16)).geometry.skimage_sinogram(np.zeros((15, 15)))


def test_optional_backends_explain_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "astra", None)
    monkeypatch.setitem(sys.modules, "torch_radon", None)
    with pytest.raises(ImportError, match=r"pip install 'invprob\[astra\]'"):
        LimitedAngleCT((1, 16, 16), backend="astra")
    with pytest.raises(ImportError, match="make install"):
        LimitedAngleCT((1, 16, 16), backend="torch-radon")


def test_import_does_not_load_optional_backends():
    code = "import sys, invprob, invprob.operators; print(sorted({'astra', 'torch_radon'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_astra_agrees_within_one_percent():
    pytest.importorskip("astra")
    for n, n_det in ((64, None), (65, 91)):
        ours = LimitedAngleCT((1, n, n), n_detectors=n_det, backend="matrix")
        theirs = LimitedAngleCT((1, n, n), n_detectors=n_det, backend="astra")
        x = _batch(_shepp_logan(n))
        assert _rel(theirs(x), ours(x)) < 0.01
        assert check_adjoint(theirs, n_trials=3).relative_error < 1e-10


class _StandInRadon:
    """torch-radon's ``Radon(resolution, angles, det_count)`` API on top of the matrix back-end."""

    calls: list = []

    def __init__(self, resolution, angles, det_count=-1):
        degrees = np.rad2deg(np.asarray(angles, dtype=np.float64))
        self.op = LimitedAngleCT((1, resolution, resolution), angles=degrees, n_detectors=det_count, backend="matrix")

    def forward(self, x):
        _StandInRadon.calls.append("forward")
        return self.op.backend.project(x)

    def backprojection(self, sinogram):
        _StandInRadon.calls.append("backprojection")
        return self.op.backend.backproject(sinogram)


def test_torch_radon_adapter_against_stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_radon", types.SimpleNamespace(Radon=_StandInRadon))
    angles = default_angles(12)
    adapted = LimitedAngleCT((2, 24, 24), angles=angles, n_detectors=30, backend="torch-radon")
    reference = LimitedAngleCT((2, 24, 24), angles=angles, n_detectors=30, backend="matrix")
    assert adapted.backend_name == "torch-radon"
    x = torch.randn((3, *adapted.in_shape), dtype=torch.float64, requires_grad=True)
    y = torch.randn((3, *adapted.out_shape), dtype=torch.float64)
    torch.testing.assert_close(adapted(x), reference(x))
    torch.testing.assert_close(adapted.adjoint(y), reference.adjoint(y))
    _StandInRadon.calls.clear()
    (adapted(x) * y).sum().backward()
    assert _StandInRadon.calls == ["forward", "backprojection"]
    torch.testing.assert_close(x.grad, reference.adjoint(y))
    assert check_adjoint(adapted, n_trials=3).relative_error < 1e-10
