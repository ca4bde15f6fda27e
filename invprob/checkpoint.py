"""Checkpoint files: safetensors weights + a JSON config, written atomically, read with clear errors.

A checkpoint directory holds ``weights.safetensors`` and ``config.json``; the JSON records the
SHA-256 of the weights file, so a truncated, corrupt or mismatched pair is detected on load. Every
file is written to a temporary name in the same directory, flushed with ``fsync`` and renamed over
the old one, so a killed process leaves either the previous checkpoint or the new one, never half.
No pickle anywhere: nested states (optimizer states) are split into tensors (safetensors) and plain
values (JSON) by :func:`flatten_state`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt, or does not match what was asked for."""


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sha256(data: bytes) -> str:
    """Hex SHA-256 digest of ``data`` (recorded in ``config.json`` and in the pretrained manifest)."""
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(directory: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write ``tensors`` and ``config`` (JSON-serialisable) to ``directory``.

    The weights are written first and the config (which names their checksum) last, so a config
    on disk always describes a complete weights file.
    """
    directory = Path(directory)
    blob = save_safetensors({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
    atomic_write(directory / WEIGHTS_FILE, blob)
    record = dict(config, weights_sha256=sha256(blob))
    atomic_write(directory / CONFIG_FILE, json.dumps(record, indent=2, sort_keys=True).encode())


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; raise :class:`CheckpointError` if broken."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"checkpoint {directory}: missing file {path.name}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {config_path}: not valid JSON ({err})") from None
    blob = weights_path.read_bytes()
    expected = config.get("weights_sha256")
    if expected is not None and sha256(blob) != expected:
        raise CheckpointError(
            f"checkpoint {weights_path}: SHA-256 {sha256(blob)[:12]}… does not match the {expected[:12]}… "
            f"recorded in {CONFIG_FILE} (truncated, corrupt or from another run)"
        )
    try:
        tensors = load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {weights_path}: not a valid safetensors file ({err})") from None
    return tensors, config


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tensors, numbers) into tensors and a JSON skeleton.

    Each tensor is replaced in the skeleton by ``{"__tensor__": key}`` and stored under ``key``.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {"__dict__": [[_check_key(k), walk(v, f"{path}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"flatten_state: cannot store a {type(obj).__name__} at {path or '<root>'}")

    return tensors, walk(state, prefix)


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {k: unflatten_state(tensors, v) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(tensors, v) for v in skeleton]
    return skeleton


def _check_key(key: Any) -> Any:
    if isinstance(key, (int, str)) and not isinstance(key, bool):
        return key
    raise TypeError(f"flatten_state: dictionary keys must be int or str, got {key!r}")

