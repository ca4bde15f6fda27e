"""Training noisy injective flows (:class:`~invprob.priors.nif.NIF`) by maximising the eq. 7 bound.

Same machinery and output as :func:`invprob.training.train_flow`: the trainer base
(:func:`~invprob.training.common.run_phases`) with atomic, resumable checkpoints under
``out_dir/nif-state/``, then the prior written to ``out_dir`` (load it with
:func:`invprob.priors.load_prior_file`).

References:
    Cunningham, Zabounidis, Agrawal, Fiterau, Sheldon (2020), "Normalizing Flows Across
    Dimensions" (noisy injective flows and their lower bound, eq. 7).

Example:
    >>> import tempfile, torch
    >>> from invprob.priors import NIF
    >>> prior = NIF((1, 8, 8), 4, n_scales=1, hidden=4)
    >>> images = torch.rand(16, 1, 8, 8) * 2 - 1
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     report = train_nif(prior, images, tmp, steps=2, batch_size=8, progress=False)
    >>> report["finished"], sorted(report["metrics"])
    (True, ['bits_per_dim'])
"""

from __future__ import annotations

import os
from typing import Any

import torch
from pydantic import Field
from torch.utils.data import Dataset

from ..priors.nif import NIF, nif_loss
from .common import DequantisedOptions, Phase, bits_per_dim_validator, dequantise, prepare, run_phases


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
    opts, val = prepare(prior, NIF, NIFTrainOptions, options, dataset, val_dataset, "train_nif")

    def loss_fn(model: NIF, batch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        # noise added in the dataset's dtype, before the move to the model (unlike train_flow)
        noisy = dequantise(batch, opts.delta, generator).to(model.device, model.dtype)
        return nif_loss(model, noisy, generator, opts.n_samples)

    validate = bits_per_dim_validator(val, opts)
    return run_phases(
        prior, dataset, out_dir, [Phase("nif", loss_fn, opts.steps, opts.lr, validate)], trainer="train_nif", opts=opts,
        resume=resume, stop_after=stop_after, command=command, final_metrics=validate,
    )
