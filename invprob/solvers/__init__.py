"""Reconstruction methods behind :func:`solve` (MAP solvers and posterior samplers)."""

from .base import METHODS, Result, Solver, SolverDiverged, SolverOptions, list_methods, make_options, register, solve

__all__ = ["METHODS", "Result", "Solver", "SolverDiverged", "SolverOptions", "list_methods", "make_options", "register", "solve"]

from .variational import AmortizedPosterior, FlowPosterior, train_amortized

__all__ += ["AmortizedPosterior", "FlowPosterior", "train_amortized"]
