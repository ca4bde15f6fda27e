"""A resumable training loop shared by every prior family.

:func:`fit` minimises ``loss_fn(model, batch, generator)`` with Adam over a map-style dataset. It is
deterministic and resumable by construction:

- the data order of epoch ``e`` is a permutation drawn from ``seed`` and ``e``, so step ``s`` always
  sees the same batch, whether or not the run was interrupted;
- the random numbers a loss needs (dequantisation noise, Hutchinson probes, ...) come from a
  generator seeded from ``seed`` and the step, handed to ``loss_fn``;
- every ``checkpoint_every`` steps the model, the optimizer state, the step and the history are
  written atomically to ``out_dir/<phase>-state/``; with ``resume=True`` a later call continues
  from there, so a killed run loses at most one checkpoint interval and ends with the same
  parameters as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..checkpoint import CONFIG_FILE, CheckpointError, flatten_state, load_checkpoint, save_checkpoint, unflatten_state

LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator], "tuple[torch.Tensor, dict[str, float]]"]
ValidateFn = Callable[[nn.Module], "dict[str, float]"]


class LoopSettings(BaseModel):
    """The options of :func:`fit` that every trainer passes through unchanged (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1)
    clip_grad: float | None = Field(1.0, gt=0, description="gradient-norm clipping; None disables it")
    seed: int = Field(0, ge=0)
    checkpoint_every: int = Field(200, ge=1)
    validate_every: int = Field(500, ge=1)
    progress: bool = True


class FitOptions(LoopSettings):
    """Options of :func:`fit` (validated; unknown keys are rejected)."""

    steps: int = Field(ge=1, description="number of optimizer steps")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    phase: str = Field("train", pattern=r"^[A-Za-z0-9_-]+$")


class TrainingDiverged(RuntimeError):
    """The loss became non-finite."""


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    *,
    params: Iterable[nn.Parameter] | None = None,
    validate: ValidateFn | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    pass_step: bool = False,
    **options: Any,
) -> dict[str, list]:
    """Train ``model`` in place and return its history (``step``, ``loss``, metrics, ``val``).

    ``params`` restricts the optimised parameters (default: all that require grad). ``validate``
    is called every ``validate_every`` steps and at the end, under ``torch.no_grad``.
    ``stop_after`` ends the call after that many steps *of this call* (used to simulate a kill in
    tests, or to train in slices). With ``pass_step`` the loss is called as
    ``loss_fn(model, batch, generator, step)``, ``step`` the 0-based index of the optimizer step
    being taken, for schedules such as increasing penalty weights (it survives resumption like
    everything else). See :class:`FitOptions` for the other options.

    Raises ``FileExistsError`` when ``out_dir`` already holds a checkpoint of this phase and
    ``resume`` is False, and :class:`TrainingDiverged` when the loss becomes NaN or Inf.
    """
    opts = FitOptions(**options)
    if len(dataset) < opts.batch_size:
        raise ValueError(f"batch_size: {opts.batch_size} exceeds the dataset size {len(dataset)}")
    state_dir = Path(out_dir) / f"{opts.phase}-state"
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("params: nothing to optimise (no parameter requires grad)")
    optimizer = torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    history: dict[str, list] = {"step": [], "loss": [], "val": []}
    step, seconds_before = 0, 0.0
    if (state_dir / CONFIG_FILE).exists():
        if not resume:
            raise FileExistsError(f"out_dir: {state_dir} holds a checkpoint; pass resume=True or use another directory")
        step, history, seconds_before = _restore(state_dir, model, optimizer, opts)
    model.train()
    last = opts.steps if stop_after is None else min(opts.steps, step + stop_after)
    bar = tqdm(total=opts.steps, initial=step, desc=opts.phase, disable=not opts.progress, file=sys.stderr)
    start = time.perf_counter()
    while step < last:
        batch = _batch(dataset, opts, step)
        generator = torch.Generator().manual_seed(opts.seed * 1_000_003 + step)
        loss, metrics = loss_fn(model, batch, generator, step) if pass_step else loss_fn(model, batch, generator)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"{opts.phase}: loss became {float(loss.detach())} at step {step}; try a smaller lr or stronger clip_grad"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if opts.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(params, opts.clip_grad)
        optimizer.step()
        step += 1
        _log(history, step, float(loss.detach()), metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4g}")
        if validate is not None and (step % opts.validate_every == 0 or step == opts.steps):
            history["val"].append({"step": step, **_validate(model, validate)})
        if step % opts.checkpoint_every == 0 or step == last:
            _save(state_dir, model, optimizer, opts, step, history, time.perf_counter() - start, seconds_before)
    bar.close()
    model.eval()
    return history


def _batch(dataset: Dataset, opts: FitOptions, step: int) -> torch.Tensor:
    """The batch of step ``step``: a slice of the seeded permutation of its epoch (last partial batch dropped)."""
    per_epoch = len(dataset) // opts.batch_size
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(opts.seed * 7919 + epoch))
    return stack_items([dataset[int(i)] for i in order[index * opts.batch_size : (index + 1) * opts.batch_size]])


def stack_items(items: Sequence[Any]) -> torch.Tensor:
    """Stack dataset items into a batch; an item that is a tuple or list contributes its first entry (the image)."""
    return torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])


def _log(history: dict[str, list], step: int, loss: float, metrics: dict[str, float]) -> None:
    history["step"].append(step)
    history["loss"].append(loss)
    for key, value in metrics.items():
        history.setdefault(key, []).append(float(value.detach() if isinstance(value, torch.Tensor) else value))


def _validate(model: nn.Module, validate: ValidateFn) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        metrics = {k: float(v) for k, v in validate(model).items()}
    model.train()
    return metrics


def _save(
    state_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, opts: FitOptions, step: int, history: dict,
    seconds: float, seconds_before: float,
) -> None:
    """Write the training state; ``seconds`` of this call, plus ``seconds_before`` of earlier calls for the total."""
    opt_tensors, opt_skeleton = flatten_state(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"optimizer{k}": v for k, v in opt_tensors.items()})
    config = {
        "format": "invprob-training-state",
        "model_class": type(model).__name__,
        "options": opts.model_dump(),
        "step": step,
        "history": history,
        "optimizer": opt_skeleton,
        "seconds_this_call": seconds,
        "seconds": seconds_before + seconds,
    }
    save_checkpoint(state_dir, tensors, config)


def _restore(state_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, opts: FitOptions) -> tuple[int, dict, float]:
    """Load a training state into ``model`` and ``optimizer``; return its step, history and seconds so far."""
    tensors, config = load_checkpoint(state_dir)
    if config.get("model_class") != type(model).__name__:
        raise CheckpointError(f"checkpoint {state_dir}: trains a {config.get('model_class')}, not a {type(model).__name__}")
    saved = {k: v for k, v in config["options"].items() if k not in ("steps", "progress", "checkpoint_every", "validate_every")}
    current = {k: v for k, v in opts.model_dump().items() if k in saved}
    if saved != current:
        changed = {k: (saved[k], current[k]) for k in saved if saved[k] != current.get(k)}
        raise CheckpointError(f"checkpoint {state_dir}: resumed with different options (saved, now): {changed}")
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {state_dir}: model weights do not fit ({err})") from None
    opt_tensors = {k[len("optimizer") :]: v for k, v in tensors.items() if k.startswith("optimizer")}
    optimizer.load_state_dict(unflatten_state(opt_tensors, config["optimizer"]))
    if not math.isfinite(config["step"]) or config["step"] < 0:
        raise CheckpointError(f"checkpoint {state_dir}: invalid step {config['step']}")
    return int(config["step"]), config["history"], float(config.get("seconds", config.get("seconds_this_call", 0.0)))
