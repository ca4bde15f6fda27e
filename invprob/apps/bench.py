"""One-command benchmark: every chosen method on every chosen operator, same images, same noise.

:func:`run` evaluates the grid ``operators x methods x images`` one image at a time, so that each
image's seconds are its own. Each finished cell is appended to ``results.jsonl`` in the output
directory as soon as it is computed, so an interrupted run loses at most the cell in progress;
re-running with the same directory and configuration skips every finished cell. The directory
is locked while a run uses it: a second run on the same directory stops with a message naming
the lock. Reading the results keeps, for each cell, its last complete row (a line cut short by a
kill, or rows written twice, are dropped and the file is rewritten clean). A directory holding
results of another configuration is refused unless ``force=True`` (which discards them). When
every cell is done the run writes ``results.csv``, ``tables.md`` (SNR, PSNR on images in
``[0, 1]``, SSIM and seconds per image, mean ± std) and ``examples.png`` (one image per
operator: truth, ``A^+ y`` and every method).

Operator specs are compact strings: ``gauss:250,randmask:0.15,sr:4,block:12,ct:30``. Method specs
are names, or ``label=method`` to run one method under several settings, with the options keyed by
label: ``methods="dip,dip-prior=dip"``, ``method_options={"dip-prior": {"network": "prior"}}``.

Named presets (:data:`PRESETS`, ``preset=`` / ``invprob bench --preset``) fix a whole protocol;
explicit arguments override it. ``table3`` is the MNIST protocol of Table 3 of the Trumpets paper;
its ``tables.md`` also lists the paper's SNRs beside the measured ones.

References: K. Kothari, A. Khorashadizadeh, M. de Hoop, I. Dokmanić (2021), "Trumpets: Injective
Flows for Inference and Inverse Problems" (Table 3, the benchmark's protocol).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import platform
import re
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..operators import LinearOperator, add_noise
from ..operators.spec import OperatorSpec, parse_operators
from .._checks import check_int
from ..checkpoint import atomic_write
from .presets import DEFAULTS, MAP_METHODS, PRESETS, TABLE3_PAPER, Preset  # noqa: F401  (re-exported)

RESULTS = "results.jsonl"
CONFIG = "bench_config.json"
LOCK = ".bench.lock"
OUTPUTS = ("tables.md", "results.csv", "examples.png")

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class MethodSpec:
    """A method under a column label: ``csgm`` or ``dip-prior=dip`` (label ``dip-prior``, method ``dip``)."""

    label: str
    method: str

    @property
    def text(self) -> str:
        """The spec as written: the label alone when it is the method's name."""
        return self.label if self.label == self.method else f"{self.label}={self.method}"


def parse_methods(spec: str | list[str]) -> list[MethodSpec]:
    """Parse ``"pinv,iflow-l,dip-prior=dip"`` (or a list) and check each method against the registry.

    Example:
        >>> [(m.label, m.method) for m in parse_methods("csgm, dip-prior=dip")]
        [('csgm', 'csgm'), ('dip-prior', 'dip')]
    """
    from ..solvers import list_methods

    items = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    if not items:
        raise ValueError(f"methods: expected at least one method name, got {spec!r}")
    valid = list_methods()
    out = []
    for item in items:
        label, sep, method = (part.strip() for part in item.partition("="))
        method = method if sep else label
        if method not in valid:
            raise ValueError(f"methods: unknown method {method!r} in {item!r}; valid: {', '.join(valid)}")
        if not _LABEL.match(label):
            raise ValueError(f"methods: label {label!r} in {item!r} must be letters, digits, '-' or '_'")
        if label != method and label in valid:
            raise ValueError(f"methods: label {label!r} in {item!r} is the name of another method; choose another label")
        out.append(MethodSpec(label, method))
    labels = [m.label for m in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"methods: {spec!r} lists a method (label) twice")
    return out


def parse_option(text: str) -> tuple[str, str, Any]:
    """Parse a per-method option ``label.key=value`` (value read as JSON, else kept as a string)."""
    target, sep, raw = text.partition("=")
    method, dot, key = target.partition(".")
    if not sep or not dot or not method or not key:
        raise ValueError(f"option: expected method.key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return method, key, value


def check_method_options(specs: list[MethodSpec], options: dict[str, dict[str, Any]]) -> None:
    """Raise ``ValueError`` for options of an unknown label, unknown keys (listing the valid ones) or bad values."""
    from pydantic import ValidationError

    from ..solvers.base import options_model

    by_label = {s.label: s for s in specs}
    for label, values in options.items():
        if label not in by_label:
            raise ValueError(f"method_options: options given for {label!r}, which is not among the methods {list(by_label)}")
        method = by_label[label].method
        fields = options_model(method).model_fields
        valid = ", ".join(f"{k} (default {f.default!r})" if not f.is_required() else k for k, f in fields.items())
        for key in values:
            if key not in fields:
                raise ValueError(f"method_options: {label} ({method}) has no option {key!r}; valid options: {valid}")
        trial = dict(values)
        if "sigma" in fields and "sigma" not in trial:
            trial["sigma"] = 1.0  # the benchmark passes the known noise level
        try:
            options_model(method)(**trial)
        except ValidationError as err:
            problems = "; ".join(
                f"{label}.{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg'][0].lower()}{e['msg'][1:]}" for e in err.errors())
            raise ValueError(f"method_options: {problems}; valid options of {method}: {valid}") from None


def resolve_config(
    preset: str | None = None, *, method_options: dict[str, dict[str, Any]] | None = None, seed: int = 0, **settings: Any
) -> dict[str, Any]:
    """The run's configuration: :data:`DEFAULTS`, then the preset's settings, then the ``settings`` not None.

    ``settings`` are the keys of :data:`DEFAULTS` (``prior``, ``dataset``, ``split``, ``n_images``,
    ``operators``, ``methods``, ``snr_db``), as in :func:`run`.

    Everything is checked here, before any work: the operator and method specs, the options of each
    method label (unknown keys are listed with the valid ones), ``n_images`` and ``snr_db``.

    Example:
        >>> config = resolve_config("table3", n_images=2)
        >>> config["operators"], config["n_images"], config["method_options"]["dip-prior"]["network"]
        (['gauss:250', 'drop:0.15', 'keep:0.15', 'sr:4', 'block:12', 'block:16'], 2, 'prior')
    """
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"resolve_config: unknown setting(s) {unknown}; valid: {', '.join(DEFAULTS)}")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    chosen = PRESETS[preset] if preset is not None else None
    settings = {**DEFAULTS, **(chosen.settings if chosen else {}), **{k: v for k, v in settings.items() if v is not None}}
    op_specs = parse_operators(settings["operators"])
    specs = parse_methods(settings["methods"])
    labels = [s.label for s in specs]
    base_options = {k: v for k, v in (chosen.method_options if chosen else {}).items() if k in labels}
    check_method_options(specs, method_options or {})
    merged = {s.label: {**base_options.get(s.label, {}), **(method_options or {}).get(s.label, {})} for s in specs}
    check_method_options(specs, merged)
    n = check_int(settings["n_images"], "n_images", minimum=1)
    snr_db = settings["snr_db"]
    if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float)) or not math.isfinite(snr_db):
        raise ValueError(f"snr_db: expected a finite number, got {snr_db!r}")
    return {
        "prior": str(settings["prior"]), "dataset": settings["dataset"], "split": settings["split"], "n_images": n,
        "operators": [o.text for o in op_specs], "methods": [s.text for s in specs], "method_options": merged,
        "snr_db": float(snr_db), "seed": check_int(seed, "seed", minimum=0),
    }


def check_device(device: str, name: str = "device") -> torch.device:
    """``torch.device(device)``, or ``ValueError`` naming ``name`` for a malformed or unavailable device."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}: expected a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}: {device!r} asked for, but CUDA is not available on this machine; use 'cpu'")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}: {device!r} asked for, but MPS is not available on this machine; use 'cpu'")
    return parsed


def check_out_dir(out_dir: str | Path, name: str = "out_dir") -> Path:
    """``out_dir`` as a path, or ``ValueError`` if it (or a parent) exists and is not a directory."""
    out = Path(out_dir)
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"{name}: expected a directory, but {str(path)!r} is a file")
            break
    return out


@dataclass
class BenchRun:
    """What :func:`run` returns: the summary tables, how many cells are done, the files it wrote."""

    summary: dict[str, Any]
    config: dict[str, Any]
    cells_done: int
    cells_total: int
    written: list[Path]
    seconds: float

    @property
    def complete(self) -> bool:
        """Whether every cell of the grid is done (and so the tables, CSV and figure were written)."""
        return self.cells_done == self.cells_total


def run(
    out_dir: str | Path,
    *,
    preset: str | None = None,
    prior: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    n_images: int | None = None,
    operators: str | None = None,
    methods: str | list[str] | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    snr_db: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    command: str = "invprob.apps.bench.run",
    stop_after: int | None = None,
    jobs: int = 1,
) -> BenchRun:
    """Run the benchmark grid and write its outputs into ``out_dir``.

    Settings left as None come from ``preset`` (one of :data:`PRESETS`), else :data:`DEFAULTS`.
    ``method_options`` maps a method label to its options, on top of the method's own defaults
    (those of :func:`invprob.solve`) and the preset's options, key by key. Methods that take a
    noise level ``sigma`` get the known one unless it is set. ``stop_after`` ends the run after that
    many newly computed cells (to simulate an interruption). ``jobs`` > 1 solves cells in that many
worker processes (each with ``torch.get_num_threads() // jobs`` threads, at least one); every
cell's seconds are still its own wall time, measured while the other workers run beside it.

    Raises:
        ValueError: a bad setting (checked before any work), ``out_dir`` holding another
            configuration, or ``out_dir`` in use by another run (its lock is held).
    """
    start = time.perf_counter()
    config = resolve_config(preset, prior=prior, dataset=dataset, split=split, n_images=n_images, operators=operators,
                            methods=methods, method_options=method_options, snr_db=snr_db, seed=seed)
    out = check_out_dir(out_dir)
    check_device(device)
    jobs = check_int(jobs, "jobs", minimum=1)
    op_specs = parse_operators(",".join(config["operators"]))
    specs = parse_methods(config["methods"])
    model = _load_prior(config["prior"], preset, device)
    images = _images(config["dataset"], config["split"], config["n_images"], model.data_shape)
    info = {"machine": _machine(), "torch": torch.__version__, "threads": worker_threads(jobs), "jobs": jobs, "date": _now(),
            "command": command, "preset": preset or "none", "seed": config["seed"]}
    total = len(op_specs) * len(specs) * config["n_images"]
    with lock_directory(out):
        done = _prepare(out, config, force)
        todo = [(o, s, i) for o in op_specs for s in specs for i in range(config["n_images"]) if (o.text, s.label, i) not in done]
        if stop_after is not None:
            todo = todo[: max(stop_after, 0)]
        _compute(out, _Cells(model, images, config, device), todo, progress, jobs, preset)
        records = _read_results(out, _cells_of(config))
        summary = summarise(records, config["operators"], [s.label for s in specs])
        written: list[Path] = []
        if len(records) == total:
            written = _write_outputs(out, records, summary, info, config, images, op_specs, specs, preset, device)
    return BenchRun(summary, config, len(records), total, written, time.perf_counter() - start)


@contextmanager
def lock_directory(out: Path) -> Iterator[None]:
    """Hold ``out/.bench.lock`` for the block; ``ValueError`` at once if another process holds it."""
    from filelock import FileLock, Timeout

    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ValueError(
            f"out_dir: {str(out)!r} is in use by another invprob bench run (lock {out / LOCK} is held); "
            "wait until it ends (then rerun to resume) or use another directory"
        ) from None
    try:
        yield
    finally:
        lock.release()


def default_jobs() -> int:
    """Worker processes of ``invprob bench`` without ``--jobs``: the CPU cores this process may use, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


def worker_threads(jobs: int) -> int:
    """Torch threads of each of ``jobs`` workers: this process's threads shared out, at least one."""
    return torch.get_num_threads() if jobs == 1 else max(1, torch.get_num_threads() // jobs)


def _load_prior(name: str, preset: str | None, device: str) -> Any:
    from ..priors.pretrained import list_priors, load_prior

    chosen = PRESETS.get(preset) if preset else None
    if chosen is not None and name == chosen.settings.get("prior") and name not in list_priors() and not Path(name).is_dir():
        raise ValueError(
            f"prior: the {preset!r} preset uses the shipped prior {name!r}, which is not installed here "
            f"(installed: {', '.join(list_priors())}); pass another one with --prior (prior=...)"
        )
    return load_prior(name, device=device)


def _images(dataset: str, split: str, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The first ``n`` images of the split, resized to ``shape`` by the loader when it can resize."""
    from ..data import load_dataset

    data = load_dataset(dataset, split=split)
    if len(data) < n:
        raise ValueError(f"n_images: the {dataset}/{split} split has only {len(data)} images, asked for {n}")
    first = _image(data[0])
    if tuple(first.shape) != tuple(shape):
        try:
            data = load_dataset(dataset, split=split, size=tuple(shape[1:]))
        except TypeError:
            raise ValueError(f"dataset: {dataset} images of shape {tuple(first.shape)} do not fit the prior's data_shape {tuple(shape)}") from None
    x = torch.stack([_image(data[i]) for i in range(n)])
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"dataset: {dataset} images of shape {tuple(x.shape[1:])} do not fit the prior's data_shape {tuple(shape)}")
    return x


def _image(item: Any) -> torch.Tensor:
    return item[0] if isinstance(item, (tuple, list)) else item


def _cells_of(config: dict[str, Any]) -> set[tuple[str, str, int]]:
    labels = [s.label for s in parse_methods(config["methods"])]
    return {(o, m, i) for o in config["operators"] for m in labels for i in range(config["n_images"])}


def _prepare(out: Path, config: dict[str, Any], force: bool) -> set[tuple[str, str, int]]:
    """Check the directory's configuration, clean ``results.jsonl``; return the finished cells."""
    config_path = out / CONFIG
    if config_path.exists():
        try:
            saved = json.loads(config_path.read_text())
        except json.JSONDecodeError:
            saved = {"unreadable": True}
        if saved != config and not _more_images(saved, config):
            if not force:
                changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
                raise ValueError(
                    f"out_dir: {out} holds results of another configuration (differs in {', '.join(changed)}); "
                    "use another directory or force=True (--force) to discard them"
                )
            (out / RESULTS).unlink(missing_ok=True)
            for old in (out / "examples").glob("*.npy"):
                old.unlink()
    atomic_write(config_path, json.dumps(config, indent=2, sort_keys=True).encode())
    for name in OUTPUTS:  # written again only when every cell is done
        (out / name).unlink(missing_ok=True)
    records = _read_results(out, _cells_of(config), repair=True)
    done = {_key(r) for r in records}
    # a cell of image 0 also needs its example image for the figure
    return {k for k in done if k[2] != 0 or _example_path(out, k[0], k[1]).is_file()}


_FIELDS: dict[str, tuple[type, ...]] = {"operator": (str,), "method": (str,), "image": (int,), "snr": (int, float),
                                        "psnr": (int, float), "ssim": (int, float), "seconds": (int, float)}


def _more_images(saved: dict[str, Any], config: dict[str, Any]) -> bool:
    """True when ``config`` only asks for more images than ``saved``: its first cells are the saved ones.

    A cell depends on its image index, never on ``n_images`` (the images are the split's first ``n``,
    the noise is seeded per index), so a run on more images keeps every finished cell.
    """
    rest = {k: v for k, v in saved.items() if k != "n_images"}
    grown = isinstance(saved.get("n_images"), int) and saved["n_images"] < config["n_images"]
    return grown and rest == {k: v for k, v in config.items() if k != "n_images"}


def _key(record: dict[str, Any]) -> tuple[str, str, int]:
    return record["operator"], record["method"], record["image"]


def _complete(record: Any) -> bool:
    return isinstance(record, dict) and all(
        isinstance(record.get(k), types) and not isinstance(record.get(k), bool) for k, types in _FIELDS.items())


def _read_results(out: Path, cells: set[tuple[str, str, int]], repair: bool = False) -> list[dict[str, Any]]:
    """The last complete row of each cell of ``cells`` in ``results.jsonl``.

    Lines that are not complete JSON rows (a write cut short by a kill, a torn line left by an
    older version) are skipped; a cell written twice keeps its last row. With ``repair=True`` the
    file is rewritten (atomically) to exactly these rows when it held anything else.
    """
    path = out / RESULTS
    if not path.exists():
        return []
    raw = path.read_bytes()
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if _complete(record) and _key(record) in cells:
            rows[_key(record)] = record
    records = list(rows.values())
    clean = "".join(json.dumps(r) + "\n" for r in records).encode()
    if repair and clean != raw:
        atomic_write(path, clean)
    return records


def _noise_generator(seed: int, op_text: str, index: int) -> torch.Generator:
    """The same noise for a given (operator, image) whatever the method or the order of the cells."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(op_text.encode()) * 1009 + index)


def measure(op: LinearOperator, x: torch.Tensor, op_text: str, index: int, snr_db: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The noisy measurement ``y`` (batch of one) of image ``x`` and its noise level ``sigma``, shape ``(1,)``.

    The noise depends only on (seed, operator spec, image index), so every method sees the same ``y``.
    """
    with torch.no_grad():
        return add_noise(op(x[None]), snr_db=snr_db, generator=_noise_generator(seed, op_text, index))


class _Cells:
    """Solves single cells: the prior, the images and the operators built so far."""

    def __init__(self, model: Any, images: torch.Tensor, config: dict[str, Any], device: str) -> None:
        self.model, self.images, self.config, self.device = model, images, config, device
        self.operators: dict[str, LinearOperator] = {}

    def solve(self, op_spec: OperatorSpec, spec: MethodSpec, index: int) -> tuple[dict[str, Any], torch.Tensor]:
        """The record of one (operator, method, image) cell and its estimate."""
        from ..metrics import psnr, snr, ssim

        model, config = self.model, self.config
        if op_spec.text not in self.operators:
            self.operators[op_spec.text] = op_spec.build(model.data_shape, config["seed"]).to(self.device)
        op = self.operators[op_spec.text]
        x = self.images[index : index + 1].to(device=self.device, dtype=model.dtype)
        y, sigma = measure(op, x[0], op_spec.text, index, config["snr_db"], config["seed"])
        generator = torch.Generator().manual_seed(config["seed"] * 7919 + index)
        x_hat, seconds = solve_known_noise(op, model, y, spec.method, generator, config["method_options"][spec.label], sigma)
        unit = (x + 1) / 2, ((x_hat + 1) / 2).clamp(0, 1)
        record = {"operator": op_spec.text, "method": spec.label, "image": index, "snr": float(snr(x, x_hat)[0]),
                  "psnr": float(psnr(*unit, data_range=1.0)[0]), "ssim": float(ssim(x, x_hat)[0]), "seconds": seconds}
        return record, x_hat[0].detach().cpu()


_WORKER: _Cells | None = None


def _start_worker(prior: str, preset: str | None, config: dict[str, Any], device: str, threads: int) -> None:
    """Initialise a worker process: its thread count, the prior, the images."""
    global _WORKER
    torch.set_num_threads(threads)
    model = _load_prior(prior, preset, device)
    _WORKER = _Cells(model, _images(config["dataset"], config["split"], config["n_images"], model.data_shape), config, device)


def _solve_in_worker(op_text: str, spec: MethodSpec, index: int) -> tuple[dict[str, Any], torch.Tensor]:
    assert _WORKER is not None, "bench worker used before _start_worker"
    return _WORKER.solve(parse_operators(op_text)[0], spec, index)


def _solved(cells: _Cells, todo: list[tuple[OperatorSpec, MethodSpec, int]], jobs: int,
            preset: str | None) -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
    """Each cell's record and estimate as it ends: in this process, or in ``jobs`` worker processes."""
    if jobs == 1 or len(todo) < 2:
        for cell in todo:
            yield cells.solve(*cell)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    init = (cells.config["prior"], preset, cells.config, cells.device, worker_threads(jobs))
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                             initargs=init) as pool:
        pending = {pool.submit(_solve_in_worker, op.text, spec, index) for op, spec, index in todo}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


def _compute(out: Path, cells: _Cells, todo: list[tuple[OperatorSpec, MethodSpec, int]], show: bool,
             jobs: int = 1, preset: str | None = None) -> None:
    """Solve each (operator, method, image) of ``todo`` on its own; append one row per cell as it ends."""
    from ..progress import progress

    with progress(len(todo), "bench", enabled=show) as bar, open(out / RESULTS, "a") as handle:
        for record, x_hat in _solved(cells, todo, jobs, preset):
            if record["image"] == 0:
                _save_example(out, record["operator"], record["method"], x_hat)
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(1, cell=f"{record['operator']}/{record['method']}/{record['image']}", snr=round(record["snr"], 2))


def _example_path(out: Path, op_text: str, name: str) -> Path:
    return out / "examples" / f"{_slug(op_text)}__{name}.npy"


def _save_example(out: Path, op_text: str, name: str, image: torch.Tensor) -> None:
    buffer = io.BytesIO()
    np.save(buffer, image.detach().cpu().float().numpy())
    atomic_write(_example_path(out, op_text, name), buffer.getvalue())


def solve_known_noise(op: LinearOperator, model: Any, y: torch.Tensor, method: str, generator: torch.Generator,
                      options: dict[str, Any], sigma: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Solve a batch; return the estimates and the wall seconds.

    Methods whose options take ``sigma`` get the known noise levels (unless the user set one): all of
    them at once when the method accepts one level per image, else one image at a time.
    """
    from ..solvers import make_options, solve
    from ..solvers.base import options_model

    if "sigma" not in options_model(method).model_fields or "sigma" in options:
        result = solve(op, model, y, method, generator=generator, **options)
        return result.x_hat.detach(), result.seconds
    if len(y) == 1:
        result = solve(op, model, y, method, generator=generator, **options, sigma=float(sigma[0]))
        return result.x_hat.detach(), result.seconds
    try:
        make_options(method, **options, sigma=sigma)
    except ValueError:
        results = [solve(op, model, y[k : k + 1], method, generator=generator, **options, sigma=float(sigma[k]))
                   for k in range(len(y))]
        return torch.cat([r.x_hat.detach() for r in results]), sum(r.seconds for r in results)
    result = solve(op, model, y, method, generator=generator, **options, sigma=sigma)
    return result.x_hat.detach(), result.seconds


def _slug(text: str) -> str:
    return text.replace(":", "-").replace(".", "p")


METRICS = {"snr": ("SNR (dB)", 2), "psnr": ("PSNR (dB, images in [0, 1])", 2), "ssim": ("SSIM", 3), "seconds": ("Seconds per image", 3)}


def summarise(records: list[dict[str, Any]], operators: list[str], methods: list[str]) -> dict[str, Any]:
    """Mean, standard deviation and count of each metric per (operator, method label)."""
    table: dict[str, dict[str, dict[str, tuple[float, float, int]]]] = {}
    for metric in METRICS:
        table[metric] = {}
        for op_text in operators:
            row = {}
            for method in methods:
                values = [r[metric] for r in records if r["operator"] == op_text and r["method"] == method]
                if values:
                    row[method] = (float(np.mean(values)), float(np.std(values)), len(values))
            table[metric][op_text] = row
    return table


def markdown_table(summary: dict[str, Any], metric: str, methods: list[str], digits: int = 2) -> str:
    """Rows operator, columns method label, cells ``mean ± std`` of ``metric``."""
    lines = ["| operator | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for op_text, row in summary[metric].items():
        cells = [f"{row[m][0]:.{digits}f} ± {row[m][1]:.{digits}f}" if m in row else "–" for m in methods]
        lines.append(f"| {op_text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables_markdown(summary: dict[str, Any], methods: list[str], info: dict[str, Any], config: dict[str, Any],
                    preset: str | None = None) -> str:
    """The metric tables (SNR, PSNR, SSIM, seconds per image) with the run's provenance; a preset's paper comparison."""
    jobs = info.get("jobs", 1)
    workers = f" in each of {jobs} worker processes" if jobs > 1 else ""
    head = (
        f"- date: {info['date']}\n- machine: {info['machine']}\n- torch: {info['torch']}, {info['threads']} threads{workers}\n"
        f"- command: `{info['command']}`\n- preset: {info.get('preset', 'none')}\n- seed: {info['seed']}\n"
        f"- prior: {config['prior']}; data: {config['dataset']}/{config['split']}, {config['n_images']} images; "
        f"noise: {config['snr_db']} dB SNR (σ from each measurement's RMS)\n"
        f"- methods: `{', '.join(config['methods'])}`; options (on top of each method's defaults): "
        f"`{json.dumps(config['method_options'], sort_keys=True)}`\n"
        "- PSNR: truth and estimate mapped to [0, 1] (estimate clipped), peak 1; seconds: each image solved on its own\n"
    )
    body = "".join(
        f"\n**{title}, mean ± std over images**\n\n" + markdown_table(summary, metric, methods, digits) + "\n"
        for metric, (title, digits) in METRICS.items()
    )
    chosen = PRESETS.get(preset) if preset else None
    if chosen is not None and chosen.reference is not None:
        body += "\n" + reference_markdown(summary, chosen.reference, methods) + "\n"
    return head + body


def reference_markdown(summary: dict[str, Any], reference: dict[str, Any], methods: list[str]) -> str:
    """The paper's SNRs beside the measured means, and per row whether the paper's order of the methods holds."""
    columns: dict[str, str] = reference["columns"]
    extra = [m for m in methods if m not in columns.values()]
    head = ["problem", "operator", *(f"{c} paper / ours" for c in columns), *(f"{m} (ours)" for m in extra), "paper's order holds?"]
    lines = [f"**SNR (dB) beside {reference['title']}**", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for op_text, row in summary["snr"].items():
        name = reference["rows"].get(op_text)
        if name is None:
            continue
        paper = reference["values"][name]
        ours = {c: row[label][0] for c, label in columns.items() if label in row}
        cells = [f"{paper[c]:.2f} / {ours[c]:.2f}" if c in ours else f"{paper[c]:.2f} / –" for c in columns]
        cells += [f"{row[m][0]:.2f}" if m in row else "–" for m in extra]
        lines.append(f"| {name} | {op_text} | " + " | ".join(cells) + f" | {ordering_verdict(paper, ours)} |")
    seconds = summary["seconds"]
    per_method = {c: float(np.mean([r[label][0] for r in seconds.values() if label in r]))
                  for c, label in columns.items() if any(label in r for r in seconds.values())}
    if per_method:
        lines += ["", "Seconds per image, mean over the problems: "
                  + ", ".join(f"{c} {s:.2f}" for c, s in per_method.items())
                  + _ratio_text(per_method)]
    return "\n".join(lines)


def _ratio_text(seconds: dict[str, float]) -> str:
    parts = []
    if seconds.get("DIP") and "iFlow" in seconds:
        parts.append(f"iFlow / DIP = {seconds['iFlow'] / seconds['DIP']:.1f} (paper ≈ 2)")
    if seconds.get("iFlow") and "CSGM" in seconds:
        parts.append(f"CSGM / iFlow = {seconds['CSGM'] / seconds['iFlow']:.1f} (paper ≈ 4)")
    return ("; " + ", ".join(parts)) if parts else ""


def ordering_verdict(paper: dict[str, float], ours: dict[str, float]) -> str:
    """``yes`` when the methods rank in the paper's order (highest SNR first), else the pairs that swap.

    Example:
        >>> ordering_verdict({"CSGM": 11.3, "iFlow-L": 21.8}, {"CSGM": 12.0, "iFlow-L": 9.0})
        'no: ours CSGM > iFlow-L'
    """
    common = [c for c in paper if c in ours]
    if len(common) < 2:
        return "–"
    swapped = [f"{a} {'>' if ours[a] > ours[b] else '<'} {b}" for i, a in enumerate(common) for b in common[i + 1:]
               if (paper[a] - paper[b]) * (ours[a] - ours[b]) < 0]
    return "yes" if not swapped else "no: ours " + ", ".join(swapped)


def _write_outputs(out: Path, records: list[dict[str, Any]], summary: dict[str, Any], info: dict[str, Any],
                   config: dict[str, Any], images: torch.Tensor, op_specs: list[OperatorSpec], specs: list[MethodSpec],
                   preset: str | None, device: str) -> list[Path]:
    labels = [s.label for s in specs]
    text = tables_markdown(summary, labels, info, config, preset)
    atomic_write(out / "tables.md", text.encode())
    buffer = io.StringIO()
    buffer.write("".join(f"# {k}: {v}\n" for k, v in info.items()))
    writer = csv.DictWriter(buffer, fieldnames=list(_FIELDS))
    writer.writeheader()
    writer.writerows(sorted(({k: r[k] for k in _FIELDS} for r in records), key=_key))
    atomic_write(out / "results.csv", buffer.getvalue().encode())
    _figure(out, images[0], op_specs, labels, config, info, device)
    return [out / name for name in OUTPUTS]


def _figure(out: Path, x: torch.Tensor, op_specs: list[OperatorSpec], labels: list[str], config: dict[str, Any],
            info: dict[str, Any], device: str) -> None:
    from ..metrics import snr
    from ..plots import PIXEL_SCALE, image_grid

    rows, captions = [], []
    for o in op_specs:
        op = o.build(tuple(x.shape), config["seed"]).to(device)
        y, _ = measure(op, x.to(device), o.text, 0, config["snr_db"], config["seed"])
        with torch.no_grad():
            estimates = [op.pinv(y)[0].cpu().float()]
        estimates += [torch.from_numpy(np.load(_example_path(out, o.text, m))) for m in labels]
        rows.append([x, *estimates])
        captions.append(["", *(f"SNR {float(snr(x[None], e[None])[0]):.1f} dB" for e in estimates)])
    title = (f"{config['prior']} on {config['dataset']}/{config['split']} image 0, {config['snr_db']:g} dB SNR: "
             f"truth, A⁺y and each method per operator (SNR against the truth) · {info['date']}")
    image_grid(rows, [o.text for o in op_specs], ["truth", "A⁺y", *labels], out / "examples.png", title=title, captions=captions,
               colorbar=PIXEL_SCALE)


def _machine() -> str:
    return f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, {platform.system()})"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
