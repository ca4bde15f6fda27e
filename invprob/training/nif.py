"""Training noisy injective flows (:class:`~invprob.priors.nif.NIF`) by maximising the eq. 7 bound.

Same machinery and output as :func:`invprob.training.train_flow`: :func:`invprob.training.fit`
with atomic, resumable checkpoints under ``out_dir/nif-state/``, then the prior written to
``out_dir`` (load it with :func:`invprob.priors.load_prior_file`).

Example::

    prior = NIF((1, 32, 32), 32)
    report = train_nif(prior, load_dataset("digits", "train"), "runs/nif-digits", steps=12000)
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from pydantic import Field
from torch.utils.data import Dataset

from ..priors.nif import NIF, nif_loss
from .loop import fit
from .priors import _Common, _finish, _fit_options, _validation_batch, bits_per_dim


class NIFTrainOptions(_Common):
    """Options of :func:`train_nif` (unknown keys are rejected)."""

    steps: int = Field(ge=1)
    lr: float = Field(1e-3, gt=0)
    n_samples: int = Field(1, ge=1, description="draws of the stochastic inverse per image and step")
    n_levels: int | None = Field(256, ge=2, description="quantisation levels for dequantisation noise; None: no noise")
    data_range: float = Field(2.0, gt=0, description="max - min of the data ([-1, 1]: 2)")


def train_nif(
    prior: NIF,
    dataset: Dataset | torch.Tensor,
    out_dir: str | os.PathLike,
    *,
    val_dataset: Dataset | torch.Tensor | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    command: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Fit ``prior`` by minimising the negative eq. 7 bound per dimension (phase ``"nif"``) and save it.

    Each step draws ``n_samples`` reparametrised samples of the stochastic inverse per image from
    the step's generator (:func:`~invprob.priors.nif.nif_loss`) and adds dequantisation noise
    ``U(-delta/2, delta/2)``, ``delta = data_range / n_levels``, which keeps the density of pixels
    that are constant in the data bounded. Validation (first ``n_val`` images of ``val_dataset``,
    default the training set) reports ``bits_per_dim`` of the bound. ``stop_after`` ends the call
    early without saving (``finished=False``). See :class:`NIFTrainOptions`.
    """
    opts = NIFTrainOptions(**options)
    if not isinstance(prior, NIF):
        raise TypeError(f"prior: expected a NIF, got {type(prior).__name__}")
    start = time.perf_counter()
    val = _validation_batch(val_dataset if val_dataset is not None else dataset, prior, opts.n_val)
    delta = opts.data_range / opts.n_levels if opts.n_levels else 0.0
    levels = opts.n_levels or 256

    def loss_fn(model: NIF, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        noise = (torch.rand(batch.shape, generator=generator, dtype=batch.dtype) - 0.5) * delta
        return nif_loss(model, (batch + noise).to(model.device, model.dtype), generator, opts.n_samples)

    def validate(model: NIF) -> dict[str, float]:
        return {"bits_per_dim": float(bits_per_dim(model.log_prob(val).mean(), model.data_dim, levels, opts.data_range))}

    history = fit(
        prior, loss_fn, dataset, out_dir, validate=validate, resume=resume, stop_after=stop_after,
        steps=opts.steps, lr=opts.lr, phase="nif", **_fit_options(opts),
    )
    if history["step"][-1] < opts.steps:
        return {"finished": False, "nif": history}
    with torch.no_grad():
        metrics = validate(prior.eval())
    return _finish(prior, out_dir, "train_nif", opts, metrics, {"nif": history}, start, command)
