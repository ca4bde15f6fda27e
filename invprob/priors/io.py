"""Saving and loading priors as checksummed checkpoints (:mod:`invprob.checkpoint`).

A saved prior is one ``checkpoint.safetensors`` file (in the directory given to :func:`save_prior`)
whose config records the prior class, its constructor arguments (``prior.config()``), the data
shape, the versions and free-form metadata (training command, metrics, ...). The checksum covers
the config and the weights together.

Example:
    >>> import tempfile, torch
    >>> from invprob.priors import LinearGaussianPrior
    >>> prior = LinearGaussianPrior(data_shape=(1, 4, 4), latent_dim=3)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_prior(prior, tmp, note="doctest")
    ...     loaded = load_prior_file(tmp, expected_class="LinearGaussianPrior")
    >>> loaded.metadata["note"], loaded.latent_dim
    ('doctest', 3)
"""

from __future__ import annotations

import inspect
import os
import platform
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, checkpoint_files, checkpoint_path, load_checkpoint, save_checkpoint, state_mismatch
from .base import PRIOR_CLASSES, Prior

FORMAT = "invprob-prior"
FORMAT_VERSION = 1
_REQUIRED = ("format", "class", "config")
_OPTIONAL = ("format_version", "data_shape", "latent_dim", "versions", "metadata")


def save_prior(prior: Prior, path: str | os.PathLike, **metadata: Any) -> Path:
    """Write ``prior`` to the directory (or ``*.safetensors`` file) ``path``: weights and the config that rebuilds it.

    ``metadata`` (JSON-serialisable: training command, metrics, ...) is stored alongside. The write
    is atomic; returns the path of the file written.
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
    return save_checkpoint(path, prior.state_dict(), config)


def load_prior_file(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    expected_class: str | None = None,
    expected_data_shape: tuple[int, ...] | None = None,
    allow_unverified: bool = False,
) -> Prior:
    """Rebuild a prior saved by :func:`save_prior` (bit-exact weights), in eval mode.

    Raises :class:`~invprob.checkpoint.CheckpointError` naming the file when it is missing,
    corrupt, edited after saving (checksum), not a prior checkpoint, when its config does not
    rebuild the class it names (unknown, extra or missing keys, weights of another shape), when it
    holds another class than ``expected_class``, or when the rebuilt prior's data shape differs
    from ``expected_data_shape``. ``allow_unverified=True`` accepts a checkpoint without a
    checksum (the two-file format of earlier versions); a wrong checksum is always refused.
    """
    if path is None or (isinstance(path, str) and not path.strip()):
        raise ValueError(f"path: expected a checkpoint directory or file, got {path!r}")
    tensors, record = load_checkpoint(path, allow_unverified=allow_unverified)
    where = (checkpoint_files(path) or [checkpoint_path(path)])[-1]
    if record.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {where}: not an invprob prior (format {record.get('format')!r})")
    missing = [k for k in _REQUIRED if k not in record]
    extra = sorted(set(record) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or extra:
        problems = [f"missing keys {missing}"] * bool(missing) + [f"unexpected keys {extra}"] * bool(extra)
        raise CheckpointError(f"checkpoint {where}: config has {' and '.join(problems)}")
    name = record["class"]
    if expected_class is not None and name != expected_class:
        raise CheckpointError(f"checkpoint {where}: holds a {name}, expected a {expected_class}")
    if name not in PRIOR_CLASSES:
        raise CheckpointError(f"checkpoint {where}: unknown prior class {name!r}; known: {sorted(PRIOR_CLASSES)}")
    prior = _rebuild(where, name, record["config"])
    if "data_shape" in record and tuple(record["data_shape"]) != prior.data_shape:
        raise CheckpointError(
            f"checkpoint {where}: records data shape {tuple(record['data_shape'])} but its config builds {prior.data_shape}"
        )
    if expected_data_shape is not None and prior.data_shape != tuple(expected_data_shape):
        raise CheckpointError(f"checkpoint {where}: data shape {prior.data_shape}, expected {tuple(expected_data_shape)}")
    saved_dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), None)
    if saved_dtype is not None:
        prior = prior.to(dtype=saved_dtype)  # load at the saved precision: no lossy round trip
    problem = state_mismatch(prior.state_dict(), tensors)
    if problem:
        raise CheckpointError(f"checkpoint {where}: weights do not fit the {name} its config builds ({problem})")
    prior.load_state_dict(tensors)
    prior.metadata = record.get("metadata", {})
    return prior.to(device=device, dtype=dtype).eval()


def _rebuild(where: Path, name: str, config: Any) -> Prior:
    """``PRIOR_CLASSES[name](**config)``, with unknown, missing or invalid keys as a CheckpointError naming ``where``."""
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {where}: 'config' must be a JSON object, got {type(config).__name__}")
    cls = PRIOR_CLASSES[name]
    accepted = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(config) - set(accepted))
        if unknown:
            raise CheckpointError(f"checkpoint {where}: config has settings a {name} does not take: {unknown}")
    try:
        prior = cls(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {where}: invalid {name} config ({err})") from None
    missing = sorted(set(prior.config()) - set(config))
    if missing:
        raise CheckpointError(f"checkpoint {where}: config lacks the {name} setting(s) {missing}")
    return prior
