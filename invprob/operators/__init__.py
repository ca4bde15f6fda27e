"""Forward operators: one interface (:class:`LinearOperator`) for every measurement process.

Example:
    >>> import torch
    >>> from invprob.operators import RandomGaussian, add_noise, check_adjoint
    >>> op = RandomGaussian((1, 8, 8), m=20, seed=0)
    >>> y, sigma = add_noise(op(torch.rand(2, 1, 8, 8)), snr_db=30, generator=torch.Generator().manual_seed(0))
    >>> op.pinv(y).shape, check_adjoint(op).relative_error < 1e-12
    (torch.Size([2, 1, 8, 8]), True)
"""

from .base import Composition, LinearOperator, Operator, Scaled, cgls
from .checks import AdjointReport, check_adjoint
from .ct import LimitedAngleCT
from .identity import Identity
from .masks import BlockMask, HalfMask, RandomMask
from .matrix import MatrixOperator, RandomGaussian, from_matrix
from .noise import add_noise
from .spec import OperatorSpec, count_operators, parse_operator, parse_operators
from .superres import SuperResolution
from .wrap import CallableLinearOperator, CallableOperator, from_callable, from_physics

__all__ = [
    "AdjointReport",
    "BlockMask",
    "CallableLinearOperator",
    "CallableOperator",
    "Composition",
    "HalfMask",
    "Identity",
    "LimitedAngleCT",
    "LinearOperator",
    "MatrixOperator",
    "Operator",
    "OperatorSpec",
    "RandomGaussian",
    "RandomMask",
    "Scaled",
    "SuperResolution",
    "add_noise",
    "cgls",
    "count_operators",
    "check_adjoint",
    "from_callable",
    "from_matrix",
    "from_physics",
    "parse_operator",
    "parse_operators",
]
