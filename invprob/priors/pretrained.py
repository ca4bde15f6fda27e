"""The shipped pretrained priors: ``load_prior("trumpet-digits")`` with no network.

Shipped checkpoints live in ``invprob/priors/pretrained/<name>/`` (``weights.safetensors``,
``config.json``, ``MODEL_CARD.md``, preview PNGs). ``MANIFEST.json`` in that folder lists each
name with a description and the SHA-256 of its weights and config files; :func:`load_prior`
verifies both before loading, so a damaged install fails loudly instead of giving a wrong prior.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, atomic_write, sha256
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
) -> Prior:
    """Load a shipped prior by name (checksums verified) or a user's checkpoint directory by path."""
    if isinstance(name_or_path, str) and name_or_path in _manifest():
        directory = PRETRAINED_DIR / name_or_path
        _verify(name_or_path, directory)
        return load_prior_file(directory, device=device, dtype=dtype)
    path = Path(name_or_path)
    if path.is_dir():
        return load_prior_file(path, device=device, dtype=dtype)
    valid = ", ".join(list_priors()) or "(none shipped)"
    raise ValueError(f"prior: {str(name_or_path)!r} is neither a shipped prior ({valid}) nor a checkpoint directory")


def register_shipped(name: str, description: str, **info: Any) -> None:
    """Add (or refresh) ``name`` in the manifest from the files in ``pretrained/<name>/``.

    Used by the training scripts after a shipped prior is trained; records the checksums. The
    manifest is replaced atomically, so a killed script never leaves it half written.
    """
    directory = PRETRAINED_DIR / name
    files = {fname: sha256((directory / fname).read_bytes()) for fname in (WEIGHTS_FILE, CONFIG_FILE)}
    manifest = _manifest()
    manifest[name] = dict(info, description=description, sha256=files)
    atomic_write(MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def _entry(name: str) -> dict[str, Any]:
    manifest = _manifest()
    if name not in manifest:
        raise ValueError(f"prior: unknown shipped prior {name!r}; valid names: {', '.join(sorted(manifest)) or '(none)'}")
    return manifest[name]


def _verify(name: str, directory: Path) -> None:
    for fname, expected in _entry(name)["sha256"].items():
        path = directory / fname
        if not path.is_file():
            raise CheckpointError(f"shipped prior {name!r}: missing file {path}")
        if sha256(path.read_bytes()) != expected:
            raise CheckpointError(f"shipped prior {name!r}: checksum of {path} does not match the manifest (damaged install?)")
