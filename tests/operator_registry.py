"""One registry of operator factories; every generic operator test is parametrized over it.

Each entry builds a small operator in float64-friendly sizes. ``full_row_rank`` says whether
``A A^+ y = y`` for every ``y`` (true for surjective operators).
"""

from dataclasses import dataclass
from typing import Callable

from invprob.operators import BlockMask, Identity, LimitedAngleCT, RandomGaussian, RandomMask, SuperResolution, from_matrix
import torch


@dataclass(frozen=True)
class Entry:
    build: Callable
    full_row_rank: bool


def _composed():
    return SuperResolution((1, 8, 8), 2) @ RandomMask((1, 8, 8), 0.3, seed=1)


def _rank_deficient_matrix():
    g = torch.Generator().manual_seed(3)
    left = torch.randn(12, 4, generator=g, dtype=torch.float64)
    right = torch.randn(4, 16, generator=g, dtype=torch.float64)
    return from_matrix(left @ right, (1, 4, 4))


OPERATORS = {
    "gaussian": Entry(lambda: RandomGaussian((1, 8, 8), 20, seed=0), True),
    "randmask": Entry(lambda: RandomMask((2, 8, 8), 0.15, seed=0), False),
    "blockmask": Entry(lambda: BlockMask((1, 8, 8), 4), False),
    "superres": Entry(lambda: SuperResolution((2, 8, 8), 4), True),
    "identity": Entry(lambda: Identity((1, 4, 4)), True),
    "scaled": Entry(lambda: 2.5 * SuperResolution((1, 8, 8), 2), True),
    "composed": Entry(_composed, False),
    "lowrank-matrix": Entry(_rank_deficient_matrix, False),
    "ct": Entry(lambda: LimitedAngleCT((1, 16, 16), angles=[30.0 + 120.0 * k / 7 for k in range(8)], backend="matrix"), True),
}
