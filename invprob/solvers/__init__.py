"""Reconstruction methods behind :func:`solve`: MAP solvers, posterior samplers and baselines.

:func:`list_methods` names them (``kind="map" | "posterior" | "baseline"``), :func:`describe_method`
lists a method's options, :func:`iterate` is the loop every iterative method runs through.
"""

from .base import (
    KINDS,
    METHODS,
    MethodInfo,
    MisfitWarning,
    OptionInfo,
    Result,
    Solver,
    SolverDiverged,
    SolverOptions,
    describe_method,
    list_methods,
    make_options,
    options_model,
    register,
    solve,
)
from .driver import StoppingOptions, StoppingRule, Trace, iterate
from .variational import AmortizedPosterior, FlowPosterior

__all__ = [
    "KINDS",
    "METHODS",
    "AmortizedPosterior",
    "FlowPosterior",
    "MethodInfo",
    "MisfitWarning",
    "OptionInfo",
    "Result",
    "Solver",
    "SolverDiverged",
    "SolverOptions",
    "StoppingOptions",
    "StoppingRule",
    "Trace",
    "describe_method",
    "iterate",
    "list_methods",
    "make_options",
    "options_model",
    "register",
    "solve",
]
