"""The one iteration driver every iterative method runs through.

A method writes only its *step*: given the iteration number and the mask of images still being
solved, it updates its state and returns per-image values (a dict of ``(B,)`` tensors holding at
least ``"loss"``, the method's objective). :func:`iterate` owns everything around it:

- the progress indicator (:func:`invprob.progress.progress`: a bar on a terminal or in a notebook,
  timed lines with a time-left estimate in log files, nothing with ``progress=False``);
- the history: the batch mean of every returned value, one entry per iteration;
- divergence: a non-finite ``loss`` raises :class:`SolverDiverged` naming the images;
- the callback ``callback(iteration, x, info) -> bool | None`` with the current estimate ``x`` and
  the batch means ``info``; returning ``True`` stops the run (the same contract for every method);
- the stopping rule (:class:`StoppingRule`), per image: images whose objective stopped improving
  are marked converged, a method may skip them (``active`` mask), and the run ends when all have
  converged or after ``iterations`` steps (the cap).

Example:
    >>> import torch
    >>> x = torch.tensor([4.0, -2.0])
    >>> def step(it, active):
    ...     x.mul_(0.5)
    ...     return {"loss": x.abs()}
    >>> trace = iterate("halve", 100, step, batch=2, estimate=lambda: x, stopping=StoppingRule(tol=1e-3, window=5))
    >>> trace.iterations < 100, bool(trace.converged.all()), len(trace.history["loss"]) == trace.iterations
    (True, True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..progress import progress as progress_indicator
from .base import Callback, SolverDiverged, divergence_hint

StepFn = Callable[[int, torch.Tensor], dict[str, torch.Tensor]]


class StoppingOptions(BaseModel):
    """Options of the stopping rule, shared by every iterative method (see :class:`StoppingRule`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tol: float = Field(
        1e-4, ge=0, allow_inf_nan=False,
        description="stop an image when its best objective improved by less than tol (relative) over `window` iterations; 0: never (run to the cap)",
    )
    window: int = Field(50, ge=1, le=1_000_000, description="iterations over which the improvement is measured")


class StoppingRule:
    """Per-image convergence by the relative improvement of the best objective over a window.

    With ``b_t = min_{s <= t} L_s`` the best objective of an image up to iteration ``t``, the image
    has converged at iteration ``t >= window`` when

        b_{t - window} - b_t <= tol * max(|b_{t - window}|, atol),

    i.e. the last ``window`` iterations improved the objective by less than a fraction ``tol``. Using
    the best value makes the rule robust to the oscillations of Adam. Once converged an image stays
    converged. ``tol = 0`` never stops.
    """

    def __init__(self, tol: float = 1e-4, window: int = 50, atol: float = 1e-12) -> None:
        self.tol, self.window, self.atol = float(tol), int(window), float(atol)
        self._best: list[torch.Tensor] = []
        self.converged: torch.Tensor | None = None

    @classmethod
    def from_options(cls, options: object) -> StoppingRule | None:
        """The rule described by an options model with ``tol``/``window`` fields (None if it has none)."""
        tol, window = getattr(options, "tol", None), getattr(options, "window", None)
        if tol is None or window is None:
            return None
        return cls(tol, window)

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        """Record the per-image objective of one iteration; return the ``(B,)`` converged mask."""
        loss = loss.detach().to(torch.float64).cpu()
        best = loss if not self._best else torch.minimum(self._best[-1], loss)
        self._best.append(best)
        if self.converged is None:
            self.converged = torch.zeros_like(loss, dtype=torch.bool)
        if self.tol > 0 and len(self._best) > self.window:
            old = self._best[-1 - self.window]
            improvement = old - best
            self.converged |= improvement <= self.tol * old.abs().clamp_min(self.atol)
            self._best = self._best[-1 - self.window :]
        return self.converged


@dataclass
class Trace:
    """What :func:`iterate` returns: the history, the iterations run and why the run ended."""

    history: dict[str, list[float]] = field(default_factory=dict)
    iterations: int = 0
    converged: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    stopped_by: str = "cap"


def iterate(
    method: str,
    iterations: int,
    step: StepFn,
    *,
    batch: int,
    estimate: Callable[[], torch.Tensor],
    callback: Callback | None = None,
    progress: bool | None = None,
    stopping: StoppingRule | None = None,
    hint: str | None = None,
    offset: int = 0,
) -> Trace:
    """Run ``step(iteration, active)`` up to ``iterations`` times; see the module docstring.

    Args:
        method: the method's name, used in progress lines and error messages.
        iterations: the iteration cap.
        step: one iteration ``step(iteration, active)``, ``active`` the ``(B,)`` boolean mask of the
            images not yet converged (all True without a stopping rule); returns a dict of
            per-image ``(B,)`` tensors with at least ``"loss"``.
        batch: the number of images ``B``.
        estimate: the current estimate, passed to ``callback`` (only called when there is one).
        callback: ``callback(iteration, x, info)``; returning ``True`` stops.
        progress: True shows progress, False/None shows nothing.
        stopping: a per-image stopping rule, or None to run to the cap.
        hint: what to try when the loss becomes non-finite (default :func:`divergence_hint`).
        offset: the number of the first iteration, as ``step``, ``callback`` and errors see it (a run that
            continues an earlier one); ``iterations`` still counts this run's steps.

    Returns:
        a :class:`Trace`; ``stopped_by`` is ``"cap"``, ``"converged"`` or ``"callback"``.
    """
    trace = Trace(converged=torch.zeros(batch, dtype=torch.bool))
    active = torch.ones(batch, dtype=torch.bool)
    with progress_indicator(iterations, method, bool(progress)) as bar:
        for it in range(offset, offset + iterations):
            values = step(it, active)
            loss = values["loss"]
            _check_finite_loss(loss, it, method, hint)
            info = _record(trace.history, values)
            trace.iterations = it + 1 - offset
            bar.update(loss=info["loss"])
            if stopping is not None:
                trace.converged = stopping.update(loss)
                active = ~trace.converged
            if callback is not None and callback(it, estimate().detach(), info) is True:
                trace.stopped_by = "callback"
                break
            if bool(trace.converged.all()):
                trace.stopped_by = "converged"
                break
    return trace


def _check_finite_loss(loss: torch.Tensor, iteration: int, method: str, hint: str | None) -> None:
    finite = torch.isfinite(loss.detach())
    if not bool(finite.all()):
        bad = torch.nonzero(~finite.flatten()).flatten().tolist()
        raise SolverDiverged(
            f"{method}: the loss of image(s) {bad} became non-finite at iteration {iteration}; "
            f"{hint or divergence_hint(iteration)}"
        )


def _record(history: dict[str, list[float]], values: dict[str, torch.Tensor]) -> dict[str, float]:
    info = {key: float(value.detach().double().mean()) for key, value in values.items()}
    for key, value in info.items():
        history.setdefault(key, []).append(value)
    return info
