"""The shipped pretrained priors: ``load_prior("trumpet-digits")`` with no network.

Shipped checkpoints live in ``invprob/priors/pretrained/<name>/`` (``checkpoint.safetensors``, or
``weights.safetensors`` + ``config.json`` for priors shipped before the single-file format, with
``MODEL_CARD.md`` and preview PNGs). ``MANIFEST.json`` in that folder lists each name with a
description and the SHA-256 of every checkpoint file; :func:`load_prior` verifies them before
loading, so a damaged install fails loudly instead of giving a wrong prior.

Example:
    >>> prior = load_prior("trumpet-digits")
    >>> prior.data_shape, prior.latent_dim
    ((1, 32, 32), 64)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, atomic_write, checkpoint_files, sha256
from .base import Prior
from .io import load_prior_file

PRETRAINED_DIR = Path(__file__).with_name("pretrained")
MANIFEST = PRETRAINED_DIR / "MANIFEST.json"


def _manifest() -> dict[str, dict[str, Any]]:
    if not MANIFEST.is_file():
        return {}
    return json.loads(MANIFEST.read_text())


def list_priors() -> dict[str, str]:
    """Names of the shipped priors mapped to one-line descriptions."""
    return {name: entry.get("description", "") for name, entry in sorted(_manifest().items())}


def describe_prior(name: str) -> dict[str, Any]:
    """The manifest entry of a shipped prior plus its model card text."""
    entry = _entry(name)
    card = PRETRAINED_DIR / name / "MODEL_CARD.md"
    return dict(entry, name=name, model_card=card.read_text() if card.is_file() else "")


def load_prior(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    allow_unverified: bool = False,
) -> Prior:
    """Load a shipped prior by name (checksums verified) or a user's checkpoint (directory or file) by path.

    A user checkpoint must carry its checksum (config and weights together); ``allow_unverified=True``
    loads one without (the two-file format of earlier versions) — see
    :func:`~invprob.priors.io.load_prior_file`. ``None`` or an empty name is refused: the current
    directory is never loaded by accident.

    Example:
        >>> prior = load_prior("trumpet-digits")
        >>> type(prior).__name__, prior.data_shape, prior.latent_dim
        ('TRUMPET', (1, 32, 32), 64)
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(os.fspath(name_or_path)).strip():
        valid = ", ".join(list_priors()) or "(none shipped)"
        raise ValueError(f"prior: expected a shipped prior name ({valid}) or a checkpoint path, got {name_or_path!r}")
    if isinstance(name_or_path, str) and name_or_path in _manifest():
        directory = PRETRAINED_DIR / name_or_path
        _verify(name_or_path, directory)  # the manifest checksums cover every file, the legacy pair too
        return load_prior_file(directory, device=device, dtype=dtype, allow_unverified=True)
    path = Path(name_or_path)
    if path.is_dir() or (path.is_file() and path.suffix == ".safetensors"):
        return load_prior_file(path, device=device, dtype=dtype, allow_unverified=allow_unverified)
    valid = ", ".join(list_priors()) or "(none shipped)"
    raise ValueError(f"prior: {str(name_or_path)!r} is neither a shipped prior ({valid}) nor a checkpoint directory or file")


def register_shipped(name: str, description: str, **info: Any) -> None:
    """Add (or refresh) ``name`` in the manifest from the files in ``pretrained/<name>/``.

    Used by the training scripts after a shipped prior is trained; records the checksums. The
    manifest is replaced atomically, so a killed script never leaves it half written.
    """
    directory = PRETRAINED_DIR / name
    files = {path.name: sha256(path.read_bytes()) for path in checkpoint_files(directory)}
    if not files:
        raise CheckpointError(f"shipped prior {name!r}: no checkpoint in {directory}")
    manifest = _manifest()
    manifest[name] = dict(info, description=description, sha256=files)
    atomic_write(MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def _entry(name: str) -> dict[str, Any]:
    manifest = _manifest()
    if name not in manifest:
        raise ValueError(f"prior: unknown shipped prior {name!r}; valid names: {', '.join(sorted(manifest)) or '(none)'}")
    return manifest[name]


def _verify(name: str, directory: Path) -> None:
    listed = _entry(name)["sha256"]
    present = sorted(path.name for path in checkpoint_files(directory))
    if present and present != sorted(listed):
        raise CheckpointError(f"shipped prior {name!r}: {directory} holds {present}, the manifest lists {sorted(listed)}")
    for fname, expected in listed.items():
        path = directory / fname
        if not path.is_file():
            raise CheckpointError(f"shipped prior {name!r}: missing file {path}")
        if sha256(path.read_bytes()) != expected:
            raise CheckpointError(f"shipped prior {name!r}: checksum of {path} does not match the manifest (damaged install?)")
