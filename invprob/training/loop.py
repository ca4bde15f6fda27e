"""A resumable training loop shared by every prior family, on one process or many (torchrun).

:func:`fit` minimises ``loss_fn(model, batch, generator)`` with Adam over a map-style dataset. It is
deterministic and resumable by construction:

- the data order of epoch ``e`` is a permutation drawn from ``seed`` and ``e``, so step ``s`` always
  sees the same batch, whether or not the run was interrupted;
- the random numbers a loss needs (dequantisation noise, Hutchinson probes, ...) come from a
  generator seeded from ``seed``, the step (and the rank, see below), handed to ``loss_fn``;
- every ``checkpoint_every`` steps the model, the optimizer state, the step and the history are
  written atomically as one checksummed file ``out_dir/<phase>-state/checkpoint.safetensors``;
  with ``resume=True`` a later call continues from there, so a killed run loses at most one
  checkpoint interval and ends with the same parameters as an uninterrupted one.

Under ``torchrun`` (``WORLD_SIZE`` > 1, see :mod:`invprob.training.distributed`) the same loop
trains with :class:`~torch.nn.parallel.DistributedDataParallel`: rank ``r`` of ``N`` takes rows
``[r b/N, (r+1) b/N)`` of every global batch of ``b = batch_size`` images (``b`` must be divisible
by ``N``), DDP averages the gradients, the loss and metrics recorded are the averages over the
ranks, a non-finite loss on any rank stops every rank at the same step with one
:class:`TrainingDiverged`, and only rank 0 writes checkpoints. Every rank resumes from the same file.

Equivalence with one process: with the same ``seed`` and global ``batch_size``, ``N`` processes
see the same batches as one process and, for a loss that is a mean over the batch of per-image
terms and draws no random numbers from ``generator``, take the same steps up to floating-point
round-off of the gradient average (TRUMPET both phases with ``cycle_weight=0``). Layers with a
data-dependent initialisation (ActNorm: an ``initialized`` buffer that is False) are initialised
before the first step by one no-grad pass of ``loss_fn`` over the whole first global batch on
every rank, i.e. on the very batch a single process initialises them with. A loss that draws
random numbers (dequantisation noise of RealNVP/NIF, probes of the relaxed flow) gets on rank
``r`` a generator seeded from ``(seed, step, r)`` — rank 0 draws what a single process draws for
its rows — so such runs are statistically, not bitwise, equivalent.

Example:
    >>> import tempfile, torch
    >>> model = torch.nn.Linear(2, 2)
    >>> data = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    >>> def loss_fn(model, batch, generator):
    ...     return (model(batch) - batch).pow(2).mean(), {}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     history = fit(model, loss_fn, data, tmp, steps=4, batch_size=8, progress=False)
    >>> history["step"]
    [1, 2, 3, 4]
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import (
    LEGACY_CONFIG_FILE,
    CheckpointError,
    checkpoint_files,
    flatten_state,
    has_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
    state_mismatch,
    unflatten_state,
)
from ..progress import progress
from ..solvers.base import parse_options
from . import distributed

LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator], "tuple[torch.Tensor, dict[str, float]]"]
ValidateFn = Callable[[nn.Module], "dict[str, float]"]
StepCallback = Callable[[int, "dict[str, float]"], Any]
#: Options that may change between a run and its resumption (they do not change the trajectory).
RESUMABLE_CHANGES = ("steps", "progress", "checkpoint_every", "validate_every", "max_loss_growth")
#: Floor of the loss scale that :attr:`LoopSettings.max_loss_growth` multiplies (a first loss of exactly 0).
LOSS_SCALE_FLOOR = 1e-6


class LoopSettings(BaseModel):
    """The options of :func:`fit` that every trainer passes through unchanged (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1, description="global batch size (split across the ranks under torchrun)")
    clip_grad: float | None = Field(1.0, gt=0, description="gradient-norm clipping; None disables it")
    seed: int = Field(0, ge=0)
    checkpoint_every: int = Field(200, ge=1)
    validate_every: int = Field(500, ge=1)
    progress: bool = True
    max_loss_growth: float | None = Field(
        1e12, gt=1, description="TrainingDiverged when |loss| on any rank exceeds this multiple of |loss| at the "
        "phase's first step (a catastrophic blow-up that stays finite; early transients of a few orders of "
        "magnitude pass); None disables the check"
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: lr decays to lr/100 over each phase's steps, lr(s) = lr/100 + (lr - lr/100)(1 + cos(pi s / steps))/2"
    )


class FitOptions(LoopSettings):
    """Options of :func:`fit` (validated; unknown keys are rejected)."""

    steps: int = Field(ge=1, description="number of optimizer steps")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    phase: str = Field("train", pattern=r"^[A-Za-z0-9_-]+$")


class TrainingDiverged(RuntimeError):
    """The loss became non-finite (on any rank), or grew past ``max_loss_growth`` times its initial scale."""


def state_dir(out_dir: str | os.PathLike, phase: str) -> Path:
    """Where :func:`fit` keeps the training state of ``phase``: ``out_dir/<phase>-state``."""
    return Path(out_dir) / f"{phase}-state"


def saved_step(out_dir: str | os.PathLike, phase: str) -> int:
    """The step of the training state of ``phase`` in ``out_dir`` (0 if there is none)."""
    directory = state_dir(out_dir, phase)
    return int(read_checkpoint_config(directory)["step"]) if has_checkpoint(directory) else 0


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    dataset: Dataset,
    out_dir: str | os.PathLike | None,
    *,
    params: Iterable[nn.Parameter] | None = None,
    validate: ValidateFn | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    pass_step: bool = False,
    callback: StepCallback | None = None,
    **options: Any,
) -> dict[str, list]:
    """Train ``model`` in place and return its history (``step``, ``loss``, metrics, ``val``).

    ``params`` restricts the optimised parameters (default: all that require grad; the others are
    frozen during the call). ``validate`` is called every ``validate_every`` steps and at the end,
    under ``torch.no_grad``. ``stop_after`` ends the call after that many steps *of this call*
    (used to simulate a kill in tests, or to train in slices). With ``pass_step`` the loss is called
    as ``loss_fn(model, batch, generator, step)``, ``step`` the 0-based index of the optimizer step
    being taken, for schedules such as increasing penalty weights. ``callback(step, values)`` is
    called after every step with the step count and the (rank-averaged) loss and metrics; returning
    True ends the call there (after a checkpoint). ``out_dir=None`` trains without checkpoints
    (nothing to resume). See :class:`FitOptions` for the other options and the module docstring
    for the multi-process behaviour.

    Raises ``FileExistsError`` when ``out_dir`` already holds a checkpoint of this phase and
    ``resume`` is False; :class:`~invprob.checkpoint.CheckpointError` when ``resume`` is True and
    there is none, when the checkpoint is of another architecture (naming the settings that differ)
    or other options, or when it is already past ``steps``; :class:`TrainingDiverged` when the loss
    becomes NaN or Inf, or its magnitude grows past ``max_loss_growth`` (default 10^12) times that of
    the phase's first step (a finite blow-up, e.g. a too-large lr on a trained model).
    """
    opts = parse_options(FitOptions, options, "fit")
    world = distributed.setup()
    if world.size > 1:
        model.to(world.device)
    if len(dataset) < opts.batch_size:
        raise ValueError(f"batch_size: {opts.batch_size} exceeds the dataset size {len(dataset)}")
    if opts.batch_size % world.size:
        raise ValueError(f"batch_size: expected a multiple of the {world.size} processes, got {opts.batch_size}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable, got {type(callback).__name__}")
    if out_dir is None and resume:
        raise ValueError("resume: nothing to resume without an out_dir")
    directory = state_dir(out_dir, opts.phase) if out_dir is not None else None
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("params: nothing to optimise (no parameter requires grad)")
    optimizer = torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    history: dict[str, list] = {"step": [], "loss": [], "val": []}
    step, seconds_before = 0, 0.0
    if directory is not None and has_checkpoint(directory):
        if not resume:
            raise FileExistsError(f"out_dir: {directory} holds a checkpoint; pass resume=True or use another directory")
        step, history, seconds_before = _restore(directory, model, optimizer, opts)
    elif resume:
        raise CheckpointError(f"resume: {directory} holds no checkpoint to resume from; start without resume")
    last = opts.steps if stop_after is None else min(opts.steps, step + stop_after)
    if step < last:
        _train(model, loss_fn, dataset, directory, params, optimizer, opts, world, validate, pass_step, step, last,
               history, seconds_before, callback)
    model.eval()
    return history


def _train(
    model: nn.Module, loss_fn: LossFn, dataset: Dataset, directory: Path | None, params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer, opts: FitOptions, world: distributed.World, validate: ValidateFn | None,
    pass_step: bool, step: int, last: int, history: dict[str, list], seconds_before: float,
    callback: StepCallback | None,
) -> None:
    """Steps ``step .. last - 1`` (the one place where one process and many differ)."""
    with distributed.trainable(model, loss_fn, params, pass_step, world) as stepper:
        if step == 0:
            stepper.initialize(lambda: _batch(dataset, opts, 0), _generator(opts, 0, 0))
        model.train()
        start = time.perf_counter()
        with progress(opts.steps - step, opts.phase, opts.progress and world.rank == 0) as bar:
            while step < last:
                batch = _batch(dataset, opts, step, world)
                loss, metrics = stepper(batch, _generator(opts, step, world.rank), step)
                values = world.average({"loss": loss.detach(), **metrics})
                _check_loss(values, history, opts, step, world)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if opts.clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(params, opts.clip_grad)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(opts, step)
                optimizer.step()
                step += 1
                _log(history, step, values)
                bar.update(1, loss=values["loss"])
                if validate is not None and (step % opts.validate_every == 0 or step == opts.steps):
                    history["val"].append({"step": step, **_validate(model, validate)})
                stop = callback is not None and callback(step, values) is True
                if directory is not None and (step % opts.checkpoint_every == 0 or step == last or stop):
                    if world.rank == 0:
                        _save(directory, model, optimizer, opts, step, history, time.perf_counter() - start, seconds_before)
                    world.barrier()
                if stop:
                    break


def _check_loss(values: dict[str, Any], history: dict[str, list], opts: FitOptions, step: int,
                world: distributed.World) -> None:
    """Raise :class:`TrainingDiverged` when the loss of ``step`` is non-finite on any rank, or when its
    magnitude on any rank exceeds ``max_loss_growth`` times that of the phase's first step (recorded
    in ``history``, so the check is the same after a resume; every rank sees every rank's loss, so
    all decide alike). Pops the per-rank losses from ``values``."""
    per_rank = values.pop("_per_rank_loss")
    hint = "try a smaller lr or stronger clip_grad"
    bad = [r for r, v in enumerate(per_rank) if not math.isfinite(v)]
    if bad:
        where = f" on rank {', '.join(map(str, bad))} of {world.size}" if world.size > 1 else ""
        raise TrainingDiverged(f"{opts.phase}: loss became {values['loss']} at step {step}{where}; {hint}")
    first = history.get("loss", [])[:1]
    if opts.max_loss_growth is None or not first:
        return
    scale = max(abs(first[0]), LOSS_SCALE_FLOOR)
    largest = max(per_rank, key=abs)
    if abs(largest) > opts.max_loss_growth * scale:
        where = f" (on rank {per_rank.index(largest)} of {world.size})" if world.size > 1 else ""
        raise TrainingDiverged(
            f"{opts.phase}: loss {largest:.4g} at step {step}{where} is more than max_loss_growth="
            f"{opts.max_loss_growth:g} times |loss| {scale:.4g} at the phase's first step; {hint}"
        )


def learning_rate(opts: FitOptions, step: int) -> float:
    """The learning rate of the optimizer step ``step`` (0-based) under ``opts.lr_schedule`` (stateless, so resumable)."""
    if opts.lr_schedule == "constant":
        return opts.lr
    low = opts.lr / 100
    return low + (opts.lr - low) * (1 + math.cos(math.pi * step / opts.steps)) / 2


def _generator(opts: FitOptions, step: int, rank: int) -> torch.Generator:
    """The generator of ``step`` on ``rank`` (rank 0: the single-process seeding)."""
    return torch.Generator().manual_seed(opts.seed * 1_000_003 + step + rank * 7_777_777_777)


def _batch(dataset: Dataset, opts: FitOptions, step: int, world: distributed.World | None = None) -> torch.Tensor:
    """This rank's rows of the batch of ``step``: a slice of the seeded permutation of its epoch (last partial batch dropped)."""
    per_epoch = len(dataset) // opts.batch_size
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(opts.seed * 7919 + epoch))
    rows = order[index * opts.batch_size : (index + 1) * opts.batch_size]
    if world is not None and world.size > 1:
        share = opts.batch_size // world.size
        rows = rows[world.rank * share : (world.rank + 1) * share]
    return stack_items([dataset[int(i)] for i in rows])


def stack_items(items: Sequence[Any]) -> torch.Tensor:
    """Stack dataset items into a batch; an item that is a tuple or list contributes its first entry (the image)."""
    return torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])


def _log(history: dict[str, list], step: int, values: dict[str, float]) -> None:
    history["step"].append(step)
    for key, value in values.items():
        history.setdefault(key, []).append(value)


def _validate(model: nn.Module, validate: ValidateFn) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        metrics = {k: float(v) for k, v in validate(model).items()}
    model.train()
    return metrics


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    return config() if callable(config) else None


def _save(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, opts: FitOptions, step: int, history: dict,
    seconds: float, seconds_before: float,
) -> None:
    """Write the training state; ``seconds`` of this call, plus ``seconds_before`` of earlier calls for the total."""
    opt_tensors, opt_skeleton = flatten_state(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"optimizer{k}": v for k, v in opt_tensors.items()})
    config = {
        "format": "invprob-training-state",
        "model_class": type(model).__name__,
        "model_config": _model_config(model),
        "options": opts.model_dump(),
        "step": step,
        "history": history,
        "optimizer": opt_skeleton,
        "seconds_this_call": seconds,
        "seconds": seconds_before + seconds,
    }
    save_checkpoint(directory, tensors, config)


def _restore(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, opts: FitOptions) -> tuple[int, dict, float]:
    """Load a training state into ``model`` and ``optimizer``; return its step, history and seconds so far.

    A state of the legacy two-file format (written by earlier versions) is accepted without a
    config checksum: its weights checksum is verified and its options are compared below.
    """
    legacy = checkpoint_files(directory)[-1].name == LEGACY_CONFIG_FILE
    tensors, config = load_checkpoint(directory, allow_unverified=legacy)
    where = checkpoint_files(directory)[-1]
    if config.get("model_class") != type(model).__name__:
        raise CheckpointError(f"checkpoint {where}: trains a {config.get('model_class')}, not a {type(model).__name__}")
    saved_arch, arch = config.get("model_config"), _model_config(model)
    if saved_arch is not None and arch is not None and saved_arch != arch:
        raise CheckpointError(f"checkpoint {where}: another architecture ({_differences(saved_arch, arch)}; saved ≠ now)")
    saved = {k: v for k, v in config["options"].items() if k not in RESUMABLE_CHANGES}
    current = {k: v for k, v in opts.model_dump().items() if k in saved}
    if saved != current:
        raise CheckpointError(f"checkpoint {where}: resumed with other options ({_differences(saved, current)}; saved ≠ now)")
    if saved.get("lr_schedule") == "cosine" and config["options"].get("steps") != opts.steps:
        raise CheckpointError(
            f"checkpoint {where}: steps {config['options'].get('steps')} ≠ {opts.steps}; the cosine schedule depends on it"
        )
    step = config.get("step")
    if not isinstance(step, int) or step < 0:
        raise CheckpointError(f"checkpoint {where}: invalid step {step!r}")
    if step > opts.steps:
        raise CheckpointError(
            f"steps: the checkpoint {where} is at step {step}, past the requested {opts.steps}; "
            f"pass at least {step} (a run cannot be shortened after the fact)"
        )
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    problem = state_mismatch(model.state_dict(), model_state)
    if problem:
        raise CheckpointError(f"checkpoint {where}: model weights do not fit ({problem})")
    model.load_state_dict(model_state)
    opt_tensors = {k[len("optimizer") :]: v for k, v in tensors.items() if k.startswith("optimizer")}
    try:
        optimizer.load_state_dict(unflatten_state(opt_tensors, config["optimizer"]))
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {where}: optimizer state does not fit the parameters ({err})") from None
    return step, config["history"], float(config.get("seconds", config.get("seconds_this_call", 0.0)))


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> str:
    """``"latent_dim 16 ≠ 32, lr 0.001 ≠ 0.5"`` for the keys whose values differ."""
    keys = sorted(set(saved) | set(now), key=str)
    return ", ".join(f"{k} {saved.get(k, '(unset)')} ≠ {now.get(k, '(unset)')}" for k in keys if saved.get(k) != now.get(k))
