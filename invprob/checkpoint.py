"""Checkpoint files: one safetensors file holding the tensors, the JSON config and their checksum.

A checkpoint is a single file, ``checkpoint.safetensors`` (inside a checkpoint directory, or any
``*.safetensors`` path). Its safetensors header carries two strings of metadata:
``invprob.config``, the JSON config (a JSON object), and ``invprob.sha256``, the SHA-256 of that
JSON text together with every tensor (name, dtype, shape, bytes), so an edited config, an edited
weight, a truncated file or a mix of two checkpoints is refused on load. A missing checksum is an
error unless the caller passes ``allow_unverified=True``.

Saving is atomic: the file is written under a temporary name in the same directory, flushed to
disk (``fsync``) and renamed over the old one with :func:`os.replace`, and the directory entry is
synced; a process killed at any point leaves either the previous complete checkpoint or the new
one. No pickle anywhere: nested states (optimizer states) are split into tensors and plain JSON
values by :func:`flatten_state`.

Directories written by earlier versions (``weights.safetensors`` + ``config.json``, whose
config records only the SHA-256 of the weights) still load; since their config is not checksummed
they need ``allow_unverified=True`` (the shipped priors in that format are verified against the
package manifest instead). Saving into such a directory replaces the pair by the single file.

Example:
    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_checkpoint(tmp, {"w": torch.ones(2)}, {"step": 3})
    ...     tensors, config = load_checkpoint(tmp)
    >>> path.name, config["step"], tensors["w"].tolist()
    ('checkpoint.safetensors', 3, [1.0, 1.0])
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

CHECKPOINT_FILE = "checkpoint.safetensors"
#: Files of the two-file format of earlier versions (read, never written).
LEGACY_WEIGHTS_FILE = "weights.safetensors"
LEGACY_CONFIG_FILE = "config.json"
CONFIG_KEY = "invprob.config"
SHA256_KEY = "invprob.sha256"
_DOMAIN = b"invprob-checkpoint-v1\0"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt, edited, or does not match what was asked for."""


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename, fsync the directory.

    Every filesystem step goes through :mod:`os` (the fault-injection tests count them).
    """
    path = Path(path)
    os.makedirs(path.parent, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sha256(data: bytes) -> str:
    """Hex SHA-256 digest of ``data`` (used by the pretrained manifest)."""
    return hashlib.sha256(data).hexdigest()


def content_sha256(config_text: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a checkpoint's JSON config text and its tensors (sorted by name: name, dtype, shape, bytes)."""
    digest = hashlib.sha256(_DOMAIN)
    digest.update(config_text.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_path(path: str | os.PathLike) -> Path:
    """The checkpoint file a path names: ``path`` itself if it ends in ``.safetensors``, else ``path/checkpoint.safetensors``."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path / CHECKPOINT_FILE


def _legacy_pair(path: Path) -> tuple[Path, Path] | None:
    if path.suffix == ".safetensors":
        return None
    weights, config = path / LEGACY_WEIGHTS_FILE, path / LEGACY_CONFIG_FILE
    return (weights, config) if config.is_file() else None


def checkpoint_files(path: str | os.PathLike) -> list[Path]:
    """The files that make up the checkpoint at ``path`` (one, or the legacy pair); empty if there is none."""
    single = checkpoint_path(path)
    if single.is_file():
        return [single]
    legacy = _legacy_pair(Path(path))
    return [p for p in legacy if p.is_file()] if legacy else []


def has_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a checkpoint (of this or the legacy format)."""
    return bool(checkpoint_files(path))


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``config`` (a JSON-serialisable dict) as one checksummed file; return its path.

    ``path`` is a checkpoint directory (the file is ``path/checkpoint.safetensors``) or a
    ``*.safetensors`` file. The write is atomic (:func:`atomic_write`); afterwards the files of the
    legacy two-file format in that directory, if any, are removed (the new file already supersedes them).
    """
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    target = checkpoint_path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    blob = save_safetensors(tensors, metadata={CONFIG_KEY: text, SHA256_KEY: content_sha256(text, tensors)})
    atomic_write(target, blob)
    legacy = _legacy_pair(Path(path))
    if legacy:
        for stale in (legacy[1], legacy[0]):  # config first: a lone legacy weights file is no checkpoint
            if stale.exists():
                os.unlink(stale)
        _fsync_directory(target.parent)
    return target


def load_checkpoint(
    path: str | os.PathLike, *, allow_unverified: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint (file or directory); return ``(tensors, config)``.

    Raises :class:`CheckpointError` naming the file when there is no checkpoint, when it is
    truncated or not safetensors, when its config is not a JSON object, when the checksum does not
    match, or when it has no checksum (a legacy directory) and ``allow_unverified`` is False.
    ``allow_unverified=True`` only accepts a *missing* checksum; a wrong one is always an error.
    """
    path = Path(path)
    single = checkpoint_path(path)
    if single.is_file():
        return _load_single(single, allow_unverified)
    legacy = _legacy_pair(path)
    if legacy:
        return _load_legacy(*legacy, allow_unverified)
    if path.suffix != ".safetensors" and (path / LEGACY_WEIGHTS_FILE).is_file():
        raise CheckpointError(f"checkpoint {path}: {LEGACY_WEIGHTS_FILE} without its {LEGACY_CONFIG_FILE}")
    where = "no such directory" if not path.exists() else "no checkpoint in it"
    raise CheckpointError(f"checkpoint {path}: {where} (expected {CHECKPOINT_FILE})")


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON config of the checkpoint at ``path``, read from the header alone (not verified; for reports)."""
    single = checkpoint_path(path)
    if single.is_file():
        with open(single, "rb") as handle:
            head = handle.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = handle.read(size) if 0 < size < 100_000_000 else b""
        return _config_of(single, _parse_header(single, head + header))
    legacy = _legacy_pair(Path(path))
    if legacy:
        return _json_object(legacy[1], legacy[1].read_bytes())
    raise CheckpointError(f"checkpoint {path}: no checkpoint there (expected {CHECKPOINT_FILE})")


def _parse_header(path: Path, blob: bytes) -> dict[str, Any]:
    if len(blob) < 8:
        raise CheckpointError(f"checkpoint {path}: not a valid safetensors file (only {len(blob)} bytes)")
    size = int.from_bytes(blob[:8], "little")
    if size > len(blob) - 8:
        raise CheckpointError(f"checkpoint {path}: not a valid safetensors file (header of {size} bytes is cut off)")
    try:
        header = json.loads(blob[8 : 8 + size])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint {path}: not a valid safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {path}: not a valid safetensors file (header is not an object)")
    return header


def _config_of(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    metadata = header.get("__metadata__") or {}
    if CONFIG_KEY not in metadata:
        raise CheckpointError(f"checkpoint {path}: not an invprob checkpoint (no {CONFIG_KEY!r} in its metadata)")
    return _json_object(path, metadata[CONFIG_KEY].encode())


def _json_object(path: Path, text: bytes) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {path}: config is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {path}: config must be a JSON object, got a JSON {type(config).__name__}")
    return config


def _tensors(path: Path, blob: bytes) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path}: not a valid safetensors file ({err})") from None


def _load_single(path: Path, allow_unverified: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with open(path, "rb") as handle:
        blob = handle.read()
    header = _parse_header(path, blob)
    config = _config_of(path, header)
    tensors = _tensors(path, blob)
    expected = (header.get("__metadata__") or {}).get(SHA256_KEY)
    if expected is None:
        if not allow_unverified:
            raise CheckpointError(
                f"checkpoint {path}: has no checksum ({SHA256_KEY}); if you trust it, load it with allow_unverified=True"
            )
    elif content_sha256(header["__metadata__"][CONFIG_KEY], tensors) != expected:
        raise CheckpointError(
            f"checkpoint {path}: checksum mismatch — its config or weights were edited or damaged after saving"
        )
    return tensors, config


def _load_legacy(weights: Path, config_path: Path, allow_unverified: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    config = _json_object(config_path, config_path.read_bytes())
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {config_path.parent}: missing file {weights.name}")
    blob = weights.read_bytes()
    expected = config.pop("weights_sha256", None)
    if expected is not None and sha256(blob) != expected:
        raise CheckpointError(
            f"checkpoint {weights}: SHA-256 {sha256(blob)[:12]}… does not match the {str(expected)[:12]}… "
            f"recorded in {config_path.name} (truncated, corrupt or from another run)"
        )
    if not allow_unverified:
        raise CheckpointError(
            f"checkpoint {config_path}: old two-file format, its config has no checksum; if you trust it, "
            "load it with allow_unverified=True (saving it again writes the checksummed format)"
        )
    return _tensors(weights, blob), config


def state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """A short description of how ``found`` differs from ``expected`` in keys and shapes ('' if it fits)."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected if k in found and found[k].shape != expected[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[:3]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}")
    if shapes:
        parts.append(f"{len(shapes)} of another shape, e.g. {'; '.join(shapes[:3])}")
    return ", ".join(parts)


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tensors, numbers) into tensors and a JSON skeleton.

    Each tensor is replaced in the skeleton by ``{"__tensor__": key}`` and stored under ``key``.

    Example:
        >>> tensors, skeleton = flatten_state({"lr": 0.1, "avg": torch.zeros(1)})
        >>> unflatten_state(tensors, skeleton)["lr"]
        0.1
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
