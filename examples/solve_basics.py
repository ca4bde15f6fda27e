"""Solve one compressed-sensing problem with every MAP method of ``invprob.solve``.

The prior is a :class:`~invprob.priors.LinearGaussianPrior` fitted to the training digits by PCA
(``x = W z + b`` with ``b`` the mean image and ``W`` the top principal directions scaled by their
standard deviations) -- a crude generative prior, but one that needs no training and has an exact
posterior, so the script runs in seconds. Swap in a trained prior (``invprob.load_prior``) for
real reconstructions.

Run: ``python examples/solve_basics.py`` (``--quick``: one image and a thirtieth of the iterations,
a few seconds; the test suite runs it so).
"""

from __future__ import annotations

import argparse

import torch

from invprob.data import digits_dataset
from invprob.metrics import snr, ssim
from invprob.operators import RandomGaussian, add_noise
from invprob.priors import LinearGaussianPrior
from invprob.solvers import solve

LATENT_DIM = 40
N_IMAGES = 4
SNR_DB = 30.0


def pca_prior(images: torch.Tensor, latent_dim: int) -> LinearGaussianPrior:
    """``x = W z + b``: ``b`` the mean, ``W`` the top principal directions times their std."""
    flat = images.flatten(1).double()
    mean = flat.mean(0)
    _, singular, vt = torch.linalg.svd(flat - mean, full_matrices=False)
    scale = singular[:latent_dim] / (flat.shape[0] - 1) ** 0.5
    W = (vt[:latent_dim].T * scale).float()
    return LinearGaussianPrior(W, mean.float(), data_shape=tuple(images.shape[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description="every MAP method on one compressed-sensing problem")
    parser.add_argument("--quick", action="store_true", help="one image and a thirtieth of the iterations (a smoke test)")
    args = parser.parse_args()
    n_images, scale = (1, 30) if args.quick else (N_IMAGES, 1)

    prior = pca_prior(digits_dataset("train").images, LATENT_DIM)
    x = digits_dataset("test").images[:n_images]
    op = RandomGaussian(prior.data_shape, m=250)
    y, sigma = add_noise(op(x), snr_db=SNR_DB, generator=torch.Generator().manual_seed(0))

    runs = {
        "pinv": {},
        "tv": dict(lam=0.05, iterations=100 // scale),
        "csgm": dict(lr=0.05, iterations=300 // scale, restarts=5),
        "iflow": dict(iterations=300 // scale),
        "iflow-l": dict(iterations=300 // scale, lam=1.0, sigma=sigma.tolist()),
        "dip": dict(iterations=150 // scale, channels=16),
    }
    exact = prior.exact_posterior(op, y, sigma).mean
    print(f"{'method':<10}{'SNR (dB)':>10}{'SSIM':>8}{'s/image':>10}")
    for method, options in runs.items():
        extra = {} if method == "pinv" else {"progress": False}
        result = solve(op, prior, y, method, generator=torch.Generator().manual_seed(1), **options, **extra)
        quality = snr(x, result.x_hat).mean().item(), ssim(x, result.x_hat, data_range=2.0).mean().item()
        print(f"{method:<10}{quality[0]:>10.2f}{quality[1]:>8.3f}{result.seconds / n_images:>10.3f}")
    print(f"{'exact MAP':<10}{snr(x, exact).mean().item():>10.2f}{ssim(x, exact, data_range=2.0).mean().item():>8.3f}")


if __name__ == "__main__":
    main()
