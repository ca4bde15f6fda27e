"""Saving and loading priors as checkpoint directories (safetensors weights + JSON config)."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .base import PRIOR_CLASSES, Prior

FORMAT = "invprob-prior"
FORMAT_VERSION = 1


def save_prior(prior: Prior, path: str | os.PathLike, **metadata: Any) -> None:
    """Write ``prior`` to the directory ``path``: its weights and the config that rebuilds it.

    ``metadata`` (JSON-serialisable: training command, metrics, ...) is stored alongside.
    """
    from .. import __version__

    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": type(prior).__name__,
        "config": prior.config(),
        "data_shape": list(prior.data_shape),
        "latent_dim": prior.latent_dim,
        "versions": {"invprob": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "metadata": metadata,
    }
    save_checkpoint(path, prior.state_dict(), config)


def load_prior_file(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    expected_class: str | None = None,
    expected_data_shape: tuple[int, ...] | None = None,
) -> Prior:
    """Rebuild a prior saved by :func:`save_prior` (bit-exact weights), in eval mode.

    Raises :class:`CheckpointError` naming the file when it is missing, corrupt, not a prior
    checkpoint, of another architecture (``expected_class``) or of another data shape.
    """
    tensors, record = load_checkpoint(path)
    if record.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an invprob prior (format {record.get('format')!r})")
    name = record.get("class")
    if expected_class is not None and name != expected_class:
        raise CheckpointError(f"checkpoint {path}: holds a {name}, expected a {expected_class}")
    if name not in PRIOR_CLASSES:
        raise CheckpointError(f"checkpoint {path}: unknown prior class {name!r}; known: {sorted(PRIOR_CLASSES)}")
    shape = tuple(record.get("data_shape", ()))
    if expected_data_shape is not None and shape != tuple(expected_data_shape):
        raise CheckpointError(f"checkpoint {path}: data shape {shape}, expected {tuple(expected_data_shape)}")
    prior = PRIOR_CLASSES[name](**record["config"])
    saved_dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), None)
    if saved_dtype is not None:
        prior = prior.to(dtype=saved_dtype)  # load at the saved precision: no lossy round trip
    missing, unexpected = _compare_keys(prior.state_dict(), tensors)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path}: weights do not match the {name} architecture "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    try:
        prior.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the {name} architecture ({err})") from None
    prior.metadata = record.get("metadata", {})
    return prior.to(device=device, dtype=dtype).eval()


def _compare_keys(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
