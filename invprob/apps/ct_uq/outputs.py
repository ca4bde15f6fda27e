"""Files of the CT workflow: resumable stage files, the maps, the JSON summary, the calibrator.

Every reconstruction (the phantom, each evaluation and calibration phantom) is a *stage*, written
to ``out/stages/NAME.npz`` as soon as it is finished, next to ``out/stages/settings.json``, the
fingerprint of everything that determines the stages' results (settings, seeds, the prior's
weights). A rerun with the same fingerprint loads the finished stages instead of recomputing them,
so an interrupted run resumes where it stopped and ends with the result an uninterrupted one
gives; a rerun with other settings discards them. A run holds an exclusive lock on
``out/stages/.lock`` while it works: a second run into the same folder is refused at once. Every file is written to a temporary name and
renamed into place, so a crash leaves either the previous file or the new one, never a torn one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...priors.base import Prior

FILES = {"maps": "maps.npz", "figure": "maps.png", "summary": "summary.json", "reliability": "reliability.png",
         "calibrator": "calibration.json"}
STAGES = "stages"


def atomic_write_bytes(path: Path, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: Path, data: Any) -> Path:
    text = (json.dumps(data, indent=2) + "\n").encode()
    return atomic_write_bytes(path, lambda f: f.write(text))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    return atomic_write_bytes(path, lambda f: np.savez_compressed(f, **arrays))


def prior_digest(prior: Prior) -> str:
    """SHA-256 of the prior's class and weights (the part of a stage fingerprint that names the model)."""
    digest = hashlib.sha256(type(prior).__qualname__.encode())
    for name, value in sorted(prior.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class StageStore:
    """Finished stages of one run directory (see the module docstring); ``close()`` releases its lock."""

    def __init__(self, out: Path, fingerprint: dict[str, Any]) -> None:
        self.dir = Path(out) / STAGES
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self.resumed: list[str] = []
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / ".lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise RuntimeError(f"out: another uq-ct run is using {out} (its stages are locked); wait for it or "
                               "choose another --out") from None
        settings = self.dir / "settings.json"
        previous = None
        if settings.is_file():
            try:
                previous = json.loads(settings.read_text())
            except (OSError, json.JSONDecodeError):
                previous = None
        if previous != self.fingerprint:
            if self.dir.is_dir():
                for stale in self.dir.glob("*.npz"):
                    stale.unlink()
            write_json(settings, self.fingerprint)

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> StageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has(self, name: str) -> bool:
        return (self.dir / f"{name}.npz").is_file()

    def load(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.dir / f"{name}.npz") as data:
            arrays = {key: data[key] for key in data.files}
        self.resumed.append(name)
        return arrays

    def save(self, name: str, arrays: dict[str, np.ndarray]) -> Path:
        return write_npz(self.dir / f"{name}.npz", arrays)


def to_numpy(tensors: dict[str, torch.Tensor | np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in tensors.items()}
