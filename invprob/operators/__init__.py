"""Forward operators: one interface (:class:`LinearOperator`) for every measurement process."""

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
