"""Pieces shared by the iterative solvers: options, optimizers, data fit, history, progress bars.

Conventions every iterative method follows:

- ``history["data_fit"]`` is the squared residual ``||y - A x||_2^2`` and ``history["loss"]`` the
  method's objective, each averaged over the batch, one value per iteration;
- ``callback(iteration, x, info)`` is called after each iteration with the current estimate and
  ``info`` (``loss``, ``data_fit``, ...); returning ``True`` stops the run early;
- all per-sample quantities are computed per batch element and the objective is the *sum* over the
  batch, so elementwise optimizers (Adam, plain gradient steps) solve each element independently
  and a batch gives the same answer as its elements solved one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BeforeValidator, Field
from tqdm.auto import tqdm

from ..operators.base import Operator
from .base import Callback, SolverDiverged, SolverOptions, divergence_hint

OptimizerName = Literal["adam", "gd"]


class LoopOptions(SolverOptions):
    """Options common to the iterative methods."""

    iterations: int = Field(1000, ge=1, le=1_000_000, description="number of iterations")
    progress: bool | None = Field(
        None, description="progress bar: True always, False never, None only on an interactive terminal"
    )


class IterativeOptions(LoopOptions):
    """Options common to the methods driven by a torch optimizer."""

    optimizer: OptimizerName = Field("adam", description="'adam' (torch.optim.Adam) or 'gd' (plain gradient steps)")


def make_optimizer(name: OptimizerName | Literal["lbfgs"], params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam, plain gradient descent ``x <- x - lr * grad`` (SGD without momentum), or L-BFGS.

    ``"lbfgs"`` is one L-BFGS iteration per ``step(closure)`` (history 20) with a strong-Wolfe line
    search, which sets the step length itself (``lr`` is not used). Its line search and curvature
    pairs are shared by all the optimised values, so unlike the elementwise optimizers it couples
    the images of a batch: each image reaches a stationary point of its own objective, not the
    iterates it would follow alone.
    """
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "lbfgs":
        return torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=20, history_size=20, line_search_fn="strong_wolfe")
    return torch.optim.SGD(params, lr=lr)


def squared_residual(op: Operator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||y_b - A x_b||_2^2`` for each batch element, shape ``(B,)``."""
    return (op(x) - y).flatten(1).pow(2).sum(1)


def keep_inactive_rows(param: torch.Tensor, before: torch.Tensor, active: torch.Tensor) -> None:
    """Put the rows of ``param`` whose ``active`` entry is False back to ``before``, in place.

    An optimizer with momentum (Adam) moves a row even when its gradient is zero, so masking the
    gradient alone does not hold a converged image where it converged; this does.

    Example:
        >>> z = torch.zeros(2, 3)
        >>> before = z.clone(); z += 1.0
        >>> keep_inactive_rows(z, before, torch.tensor([True, False])); z[:, 0].tolist()
        [1.0, 0.0]
    """
    frozen = ~active.to(device=param.device, dtype=torch.bool)
    if bool(frozen.any()):
        with torch.no_grad():
            param[frozen] = before[frozen]


def check_iterate(x: torch.Tensor, iteration: int, method: str) -> None:
    """Raise :class:`SolverDiverged` if an optimizer step produced NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        raise SolverDiverged(f"{method}: the iterate became non-finite at iteration {iteration}; {divergence_hint(iteration)}")


def progress_bar(total: int, method: str, enabled: bool | None) -> tqdm:
    """A tqdm bar over ``total`` steps; ``enabled=None`` shows it only on a terminal."""
    return tqdm(total=total, desc=method, disable=None if enabled is None else not enabled, leave=False)


def record(history: dict[str, list[float]], **values: torch.Tensor) -> dict[str, float]:
    """Append the batch mean of each per-sample value to ``history``; return them as floats."""
    info = {key: float(value.detach().mean()) for key, value in values.items()}
    for key, value in info.items():
        history.setdefault(key, []).append(value)
    return info


def notify(callback: Callback | None, iteration: int, x: torch.Tensor, info: dict[str, float]) -> bool:
    """Call the user's callback; return True when it asks to stop."""
    return callback is not None and callback(iteration, x.detach(), info) is True


def _noise_level_values(value: Any) -> Any:
    """Accept a tensor or array of noise levels (e.g. the sigma that ``add_noise`` returns) as floats."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        flat = [float(v) for v in value.reshape(-1).tolist()]
        return flat[0] if len(flat) == 1 else flat
    return value


_PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NoiseLevel = Annotated[_PositiveFloat | list[_PositiveFloat] | None, BeforeValidator(_noise_level_values)]
"""A noise standard deviation: one number for the whole batch, or one per image (a list, a tensor
or an array, such as the ``sigma`` returned by :func:`invprob.operators.add_noise`)."""
