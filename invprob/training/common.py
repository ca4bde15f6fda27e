"""What the prior trainers (:func:`train_trumpet`, :func:`train_flow`, :func:`train_nif`,
:func:`train_relaxed_flow`) share: their common options, the validation batch, dequantisation,
bits per dimension, the relative reconstruction error and the final save of the trained prior.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch.utils.data import Dataset

from ..priors.base import Prior
from .loop import LoopSettings, stack_items

Validator = Callable[[Prior], "dict[str, float]"]


class TrainOptions(LoopSettings):
    """Options every trainer accepts: those of :func:`invprob.training.fit` it passes through, and ``n_val``."""

    n_val: int = Field(256, ge=1, description="validation images used (the first n_val of the validation set)")


class SinglePhaseOptions(TrainOptions):
    """Options of a trainer that runs one :func:`invprob.training.fit` phase."""

    steps: int = Field(ge=1)
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


def relative_error(x: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """``mean_i ||x_i - r_i|| / ||x_i||`` over the batch (norms floored at 1e-12)."""
    residual = (x - reconstruction).flatten(1).norm(dim=1)
    return float((residual / x.flatten(1).norm(dim=1).clamp_min(1e-12)).mean())


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
    """Save the trained ``prior`` to ``out_dir`` with its provenance and return the trainer's report.

    The prior's metadata records the trainer, the command (default: ``sys.argv``), the options, the
    final ``metrics``, a per-phase summary of ``history`` and the wall time since ``start``
    (``time.perf_counter``). The report is ``{"finished": True, "metrics", "seconds", **history}``.
    """
    from ..priors.io import save_prior  # deferred: invprob.priors.io imports this package

    seconds = time.perf_counter() - start
    summary = {
        phase: {"steps": h["step"][-1] if h["step"] else 0, "final_loss": h["loss"][-1] if h["loss"] else None, "val": h["val"]}
        for phase, h in history.items()
    }
    save_prior(
        prior.eval(), out_dir,
        trainer=trainer,
        command=command or " ".join(sys.argv),
        options=opts.model_dump(),
        metrics=metrics,
        history=summary,
        wall_seconds_this_call=seconds,
    )
    return {"finished": True, "metrics": metrics, "seconds": seconds, **history}
