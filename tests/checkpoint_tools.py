"""Test helpers that tamper with checkpoints the way a user (or an older invprob) would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from invprob.checkpoint import CONFIG_KEY, SHA256_KEY, checkpoint_path, content_sha256, load_checkpoint, sha256


def edit_config(path: str | Path, edit: Callable[[dict[str, Any]], Any], *, resign: bool = True) -> Path:
    """Rewrite the config inside the checkpoint at ``path`` with ``edit(config)`` (in place).

    ``resign=True`` recomputes the checksum (a consistent file with a bad config: tests the config
    checks behind the checksum); ``resign=False`` keeps the old one (a hand edit: tests the checksum).
    """
    file = checkpoint_path(path)
    blob = file.read_bytes()
    tensors = load_safetensors(blob)
    size = int.from_bytes(blob[:8], "little")
    metadata = json.loads(blob[8 : 8 + size])["__metadata__"]
    config = json.loads(metadata[CONFIG_KEY])
    result = edit(config)
    config = config if result is None else result
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    digest = content_sha256(text, tensors) if resign else metadata[SHA256_KEY]
    file.write_bytes(save_safetensors(tensors, metadata={CONFIG_KEY: text, SHA256_KEY: digest}))
    return file


def write_legacy(directory: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write ``weights.safetensors`` + ``config.json`` exactly as invprob did before the single-file format."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    blob = save_safetensors({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
    (directory / "weights.safetensors").write_bytes(blob)
    record = dict(config, weights_sha256=sha256(blob))
    (directory / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True))


def to_legacy(directory: str | Path) -> None:
    """Convert the checkpoint in ``directory`` to the legacy two-file format (removing the single file)."""
    tensors, config = load_checkpoint(directory)
    checkpoint_path(directory).unlink()
    write_legacy(directory, tensors, config)
