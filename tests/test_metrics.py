"""invprob.metrics: per-sample SNR, PSNR, SSIM and relative error."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from invprob.metrics import psnr, relative_error, snr, ssim


def _pair(shape=(3, 1, 8, 8)):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    return x, x + 0.05 * torch.randn(shape, generator=g)


def test_snr_is_paper_definition_per_sample():
    x, x_hat = _pair()
    values = snr(x, x_hat)
    assert values.shape == (3,)
    for i in range(3):
        expected = 20 * math.log10(float(x[i].norm()) / float((x[i] - x_hat[i]).norm()))
        assert values[i].item() == pytest.approx(expected, rel=1e-6)


def test_snr_and_relative_error_relation():
    x, x_hat = _pair()
    torch.testing.assert_close(snr(x, x_hat), -20 * torch.log10(relative_error(x, x_hat)))
    assert relative_error(x, 2 * x).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_perfect_estimate():
    x, _ = _pair()
    assert torch.isinf(snr(x, x)).all() and torch.isinf(psnr(x, x)).all()
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3)
    assert relative_error(x, x).tolist() == [0.0] * 3


def test_psnr_matches_scikit_image():
    x, x_hat = _pair()
    values = psnr(x, x_hat, data_range=1.0)
    for i in range(3):
        expected = peak_signal_noise_ratio(x[i].numpy().astype(np.float64), x_hat[i].numpy().astype(np.float64), data_range=1.0)
        assert values[i].item() == pytest.approx(expected, rel=1e-6)
    default = psnr(x, x_hat)
    spans = x.flatten(1).max(1).values - x.flatten(1).min(1).values
    torch.testing.assert_close(default, values + 20 * torch.log10(spans.double()))


def test_ssim_matches_scikit_image_and_handles_channels():
    x, x_hat = _pair((2, 3, 16, 16))
    values = ssim(x, x_hat, data_range=1.0)
    for i in range(2):
        expected = structural_similarity(x[i].double().numpy(), x_hat[i].double().numpy(), data_range=1.0, channel_axis=0)
        assert values[i].item() == pytest.approx(expected, rel=1e-6)
    gray, gray_hat = _pair((2, 16, 16))
    assert ssim(gray, gray_hat).shape == (2,)
    assert ssim(*_pair((1, 1, 5, 5))).shape == (1,)


def test_numpy_inputs():
    x, x_hat = _pair()
    torch.testing.assert_close(snr(x.numpy(), x_hat.numpy()), snr(x, x_hat))


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (snr, (torch.zeros(2, 4), torch.zeros(2, 5)), "shape of x"),
        (snr, (torch.zeros(4), torch.zeros(4)), "batch"),
        (relative_error, (torch.full((1, 3), float("nan")), torch.zeros(1, 3)), "non-finite"),
        (psnr, (torch.ones(1, 4), torch.zeros(1, 4)), "constant"),
        (ssim, (torch.rand(1, 16), torch.rand(1, 16)), "images"),
        (ssim, (torch.rand(1, 2, 2), torch.rand(1, 2, 2)), "3x3"),
    ],
)
def test_bad_inputs(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_bad_data_range():
    with pytest.raises(ValueError, match="data_range"):
        psnr(*_pair(), data_range=-1.0)
