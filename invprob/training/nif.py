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
from .common import DequantisedOptions, bits_per_dim_validator, dequantise, finish, fit_options, validation_batch
from .loop import fit


class NIFTrainOptions(DequantisedOptions):
    """Options of :func:`train_nif` (unknown keys are rejected)."""

    n_samples: int = Field(1, ge=1, description="draws of the stochastic inverse per image and step")


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
    val = validation_batch(val_dataset if val_dataset is not None else dataset, prior, opts.n_val)

    def loss_fn(model: NIF, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        # noise added in the dataset's dtype, before the move to the model (unlike train_flow)
        noisy = dequantise(batch, opts.delta, generator).to(model.device, model.dtype)
        return nif_loss(model, noisy, generator, opts.n_samples)

    validate = bits_per_dim_validator(val, opts)
    history = fit(
        prior, loss_fn, dataset, out_dir, validate=validate, resume=resume, stop_after=stop_after,
        steps=opts.steps, lr=opts.lr, phase="nif", **fit_options(opts),
    )
    if history["step"][-1] < opts.steps:
        return {"finished": False, "nif": history}
    with torch.no_grad():
        metrics = validate(prior.eval())
    return finish(prior, out_dir, "train_nif", opts, metrics, {"nif": history}, start, command)
