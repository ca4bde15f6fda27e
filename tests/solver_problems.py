"""Small solvable inverse problems for the solver tests.

``linear_problem`` builds a LinearGaussianPrior ``x = W z + b`` on 8x8 images with a random
injective ``W`` (``d = 5``), ground truths drawn from it (so they lie on the range), and a
compressed-sensing operator with ``m = 20 > d`` measurements, so that ``A W`` is injective: the
noise-free problem restricted to the range has exactly one solution.
"""

from dataclasses import dataclass

import torch

from invprob.operators import RandomGaussian
from invprob.priors import LinearGaussianPrior

SHAPE = (1, 8, 8)
LATENT = 5


@dataclass
class Problem:
    prior: LinearGaussianPrior
    op: RandomGaussian
    x: torch.Tensor
    y: torch.Tensor


def linear_problem(batch=2, dtype=torch.float32, m=20, sigma=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(64, LATENT, generator=g, dtype=dtype) / 3
    b = 0.2 * torch.randn(64, generator=g, dtype=dtype)
    prior = LinearGaussianPrior(W, b, data_shape=SHAPE)
    op = RandomGaussian(SHAPE, m=m, seed=seed + 1)
    x = prior.sample(batch, generator=g)
    y = op(x) + sigma * torch.randn(batch, m, generator=g, dtype=dtype)
    return Problem(prior, op, x, y)


def rel_error(x_hat, x):
    return ((x_hat - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).max().item()


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)
