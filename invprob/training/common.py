"""The trainer base shared by :func:`train_trumpet`, :func:`train_flow`, :func:`train_nif` and
:func:`train_relaxed_flow`: options, the validation batch, dequantisation, bits per dimension, and
:func:`run_phases`, which runs a trainer's phases through :func:`invprob.training.fit` and saves the
trained prior with its provenance. Each trainer only states its options, losses and metrics.

Example:
    >>> import math, torch
    >>> float(bits_per_dim(torch.tensor([-64 * math.log(2.0)]), 64))  # the uniform density on [-1, 1]^64
    8.0
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, Field
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import CheckpointError, has_checkpoint
from ..metrics import relative_error
from ..priors.base import Prior
from ..priors.io import save_prior
from ..solvers.base import parse_options
from . import distributed
from .loop import LoopSettings, LossFn, fit, saved_step, stack_items, state_dir

Validator = Callable[[Prior], "dict[str, float]"]
OptionsT = TypeVar("OptionsT", bound=BaseModel)


class TrainOptions(LoopSettings):
    """Options every trainer accepts: those of :func:`invprob.training.fit` it passes through, and ``n_val``."""

    n_val: int = Field(256, ge=1, description="validation images used (the first n_val of the validation set)")


class SinglePhaseOptions(TrainOptions):
    """Options of a trainer that runs one :func:`invprob.training.fit` phase."""

    steps: int = Field(2000, ge=1, description="optimizer steps")
    lr: float = Field(1e-3, gt=0)


class DequantisedOptions(SinglePhaseOptions):
    """Options of a maximum-likelihood trainer on quantised data (uniform dequantisation noise)."""

    n_levels: int | None = Field(256, ge=2, description="quantisation levels for dequantisation noise; None: no noise")
    data_range: float = Field(2.0, gt=0, description="max - min of the data ([-1, 1]: 2)")

    @property
    def delta(self) -> float:
        """Width ``data_range / n_levels`` of the dequantisation noise (0 without quantisation)."""
        return self.data_range / self.n_levels if self.n_levels else 0.0

    @property
    def bpd_levels(self) -> int:
        """Levels used to report bits per dimension (``n_levels``, or 256 without quantisation)."""
        return self.n_levels or 256


@dataclass
class Phase:
    """One :func:`~invprob.training.fit` call of a trainer: its name (``<name>-state/``), loss and budget."""

    name: str
    loss: LossFn
    steps: int
    lr: float
    validate: Validator | None = None
    params: list[nn.Parameter] | None = None
    pass_step: bool = False


def prepare(
    prior: nn.Module,
    prior_type: type[Prior],
    options_model: type[OptionsT],
    options: dict[str, Any],
    dataset: Dataset | torch.Tensor,
    val_dataset: Dataset | torch.Tensor | None,
    trainer: str,
) -> tuple[OptionsT, torch.Tensor]:
    """The trainer preamble: check ``prior``, validate ``options``, put the prior on this rank's device, build the validation batch."""
    opts = parse_options(options_model, options, trainer)
    if not isinstance(prior, prior_type):
        article = "an" if prior_type.__name__[0] in "AEIOU" else "a"
        raise TypeError(f"prior: expected {article} {prior_type.__name__}, got {type(prior).__name__}")
    world = distributed.setup()
    if world.size > 1:
        prior.to(world.device)
    return opts, validation_batch(val_dataset if val_dataset is not None else dataset, prior, opts.n_val)


def run_phases(
    prior: Prior,
    dataset: Dataset | torch.Tensor,
    out_dir: str | os.PathLike,
    phases: list[Phase],
    *,
    trainer: str,
    opts: TrainOptions,
    resume: bool,
    stop_after: int | None,
    command: str | None,
    final_metrics: Validator,
    after_training: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run ``phases`` in order (a phase with 0 steps is skipped), then save the prior to ``out_dir``.

    ``stop_after`` counts the steps of this call over all phases; when it runs out (or a phase is
    unfinished) the report is ``{"finished": False, <phase>: history, ...}`` and nothing is saved.
    Otherwise ``after_training`` runs, ``final_metrics(prior)`` is evaluated under ``no_grad`` in
    eval mode, and rank 0 writes the prior (:func:`finish`). Raises
    :class:`~invprob.checkpoint.CheckpointError` when ``resume`` finds no checkpoint of any phase,
    or when an earlier phase would change under a later phase already trained on it.
    """
    start = time.perf_counter()
    states = {phase.name: has_checkpoint(state_dir(out_dir, phase.name)) for phase in phases}
    if resume and not any(states.values()):
        names = ", ".join(f"{phase.name}-state/" for phase in phases)
        raise CheckpointError(f"resume: {out_dir} holds no training checkpoint ({names}); start without resume")
    _check_phase_order(out_dir, phases, states)
    left, history = stop_after, {}
    active = [phase for phase in phases if phase.steps > 0]
    for i, phase in enumerate(active):
        before = saved_step(out_dir, phase.name)
        history[phase.name] = fit(
            prior, phase.loss, dataset, out_dir, params=phase.params, validate=phase.validate,
            resume=resume and states[phase.name], stop_after=left, pass_step=phase.pass_step,
            steps=phase.steps, lr=phase.lr, phase=phase.name, **fit_options(opts),
        )
        done = history[phase.name]["step"][-1] if history[phase.name]["step"] else before
        if left is not None:
            left -= done - before
        if done < phase.steps or (left is not None and left <= 0 and i + 1 < len(active)):
            return {"finished": False, **history}
    prior.eval()
    if after_training is not None:
        after_training()
    with torch.no_grad():
        metrics = {k: float(v) for k, v in final_metrics(prior).items()}
    return finish(prior, out_dir, trainer, opts, metrics, history, start, command)


def _check_phase_order(out_dir: str | os.PathLike, phases: list[Phase], states: dict[str, bool]) -> None:
    """An earlier phase may not be extended, nor a phase dropped, once a later phase holds a state."""
    for i, phase in enumerate(phases):
        later = [p.name for p in phases[i + 1 :] if states[p.name]]
        if states[phase.name] and phase.steps == 0:
            raise CheckpointError(
                f"steps: {state_dir(out_dir, phase.name)} holds a trained phase {phase.name!r} but 0 steps were asked "
                "for it; the saved prior would not say it was trained"
            )
        if later and saved_step(out_dir, phase.name) != phase.steps:
            raise CheckpointError(
                f"steps: phase {phase.name!r} ended at step {saved_step(out_dir, phase.name)} and phase {later[0]!r} "
                f"was trained on it; it cannot change to {phase.steps} steps (use a new out_dir)"
            )


def fit_options(opts: LoopSettings) -> dict[str, Any]:
    """The options of ``opts`` that :func:`invprob.training.fit` takes unchanged, as keyword arguments."""
    return {key: getattr(opts, key) for key in LoopSettings.model_fields}


def validation_batch(dataset: Dataset | torch.Tensor, prior: Prior, n: int) -> torch.Tensor:
    """The first ``n`` images of ``dataset`` as one checked batch on the prior's device and dtype."""
    if len(dataset) == 0:
        raise ValueError("val_dataset: expected at least one image, got an empty dataset")
    batch = stack_items([dataset[i] for i in range(min(n, len(dataset)))])
    return prior.check_data(batch.to(prior.device, prior.dtype), "val_dataset")


def dequantise(batch: torch.Tensor, delta: float, generator: torch.Generator) -> torch.Tensor:
    """``batch + u``, ``u ~ U(-delta/2, delta/2)`` per entry, drawn on the CPU (in ``batch``'s dtype) from ``generator``."""
    noise = (torch.rand(batch.shape, generator=generator, dtype=batch.dtype) - 0.5).to(batch.device) * delta
    return batch + noise


def bits_per_dim(log_prob: torch.Tensor, data_dim: int, n_levels: int = 256, data_range: float = 2.0) -> torch.Tensor:
    """Bits per dimension of a density on data spanning ``data_range`` with ``n_levels`` levels.

    Rescaling the data to ``[0, n_levels)`` divides the density by ``(n_levels / data_range)^n``, so
    ``bpd = (-log p(x) / n + log(n_levels / data_range)) / log 2``.
    """
    return nats_to_bpd(-log_prob / data_dim, n_levels, data_range)


def nats_to_bpd(nll_per_dim: torch.Tensor, n_levels: int, data_range: float) -> torch.Tensor:
    """``(nll / n + log(n_levels / data_range)) / log 2``: nats per dimension to bits per dimension."""
    return (nll_per_dim + math.log(n_levels / data_range)) / math.log(2)


def bits_per_dim_validator(val: torch.Tensor, opts: DequantisedOptions) -> Validator:
    """``model -> {"bits_per_dim": ...}`` of ``model.log_prob`` on the (noise-free) batch ``val``."""

    def validate(model: Prior) -> dict[str, float]:
        log_prob = model.log_prob(val).mean()
        return {"bits_per_dim": float(bits_per_dim(log_prob, model.data_dim, opts.bpd_levels, opts.data_range))}

    return validate


def mean_relative_error(x: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """``mean_i ||x_i - r_i|| / ||x_i||`` over the batch (:func:`invprob.metrics.relative_error`)."""
    return float(relative_error(x, reconstruction).mean())


def finish(
    prior: Prior,
    out_dir: str | os.PathLike,
    trainer: str,
    opts: BaseModel,
    metrics: dict[str, float],
    history: dict[str, dict],
    start: float,
    command: str | None,
) -> dict[str, Any]:
    """Save the trained ``prior`` to ``out_dir`` (rank 0 only) with its provenance; return the trainer's report.

    The prior's metadata records the trainer, the command (default: ``sys.argv``), the options, the
    final ``metrics``, a per-phase summary of ``history`` and the wall time since ``start``
    (``time.perf_counter``). The report is ``{"finished": True, "metrics", "seconds", **history}``.
    """
    seconds = time.perf_counter() - start
    summary = {
        phase: {"steps": h["step"][-1] if h["step"] else 0, "final_loss": h["loss"][-1] if h["loss"] else None, "val": h["val"]}
        for phase, h in history.items()
    }
    world = distributed.setup()
    if world.is_main:
        save_prior(
            prior.eval(), Path(out_dir),
            trainer=trainer,
            command=command or " ".join(sys.argv),
            options=opts.model_dump(),
            metrics=metrics,
            history=summary,
            wall_seconds_this_call=seconds,
        )
    world.barrier()
    return {"finished": True, "metrics": metrics, "seconds": seconds, **history}
