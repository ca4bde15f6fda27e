"""One-command benchmark: every chosen method on every chosen operator, same images, same noise.

:func:`run` evaluates the grid ``operators x methods x images``. Each finished cell is appended to
``results.jsonl`` in the output directory as soon as it is computed (the images of one
(operator, method) pair are solved together as a batch), so an interrupted run loses at most the
pair in progress; re-running with the same directory and configuration skips every
finished cell. A directory holding results of another configuration is refused unless
``force=True`` (which discards them). At the end the run writes ``results.csv``, ``tables.md``
(SNR, SSIM and seconds per image, mean ± std) and ``examples.png`` (one image per operator: truth,
``A^+ y`` and every method).

Operator specs are compact strings: ``gauss:250,randmask:0.15,sr:4,block:12,ct:30``.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import platform
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..operators import LinearOperator, add_noise
from ..operators.spec import OperatorSpec, parse_operators
from ..checkpoint import atomic_write

RESULTS = "results.jsonl"
CONFIG = "bench_config.json"
MAP_METHODS = ("pinv", "tv", "csgm", "dip", "iflow", "iflow-l")

#: Iteration budgets of the MAP methods in the benchmark and the demo: each method's defaults with
#: fewer iterations, so that the default grid (10 digits x 4 operators x 6 methods) runs in minutes
#: on 2 CPU cores. A user's ``method_options`` override them key by key.
QUICK_OPTIONS: dict[str, dict[str, Any]] = {
    "tv": {"iterations": 100},
    "csgm": {"restarts": 10, "iterations": 150, "lr": 0.05},
    "dip": {"iterations": 300},
    "iflow": {"iterations": 150},
    "iflow-l": {"iterations": 150},
}


def parse_methods(spec: str | list[str]) -> list[str]:
    """Parse ``"pinv,iflow-l"`` (or a list) and check each name against the registry."""
    from ..solvers import list_methods

    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    if not names:
        raise ValueError("methods: expected at least one method name")
    valid = list_methods()
    for name in names:
        if name not in valid:
            raise ValueError(f"methods: unknown method {name!r}; valid: {', '.join(valid)}")
    if len(set(names)) != len(names):
        raise ValueError(f"methods: {spec!r} lists a method twice")
    return names


def parse_option(text: str) -> tuple[str, str, Any]:
    """Parse a per-method option ``method.key=value`` (value read as JSON, else kept as a string)."""
    target, sep, raw = text.partition("=")
    method, dot, key = target.partition(".")
    if not sep or not dot or not method or not key:
        raise ValueError(f"option: expected method.key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return method, key, value


def run(
    out_dir: str | Path,
    *,
    prior: str = "trumpet-digits",
    dataset: str = "digits",
    split: str = "test",
    n_images: int = 10,
    operators: str = "gauss:250,randmask:0.15,sr:4,block:12",
    methods: str | list[str] = ",".join(MAP_METHODS),
    method_options: dict[str, dict[str, Any]] | None = None,
    snr_db: float = 30.0,
    seed: int = 0,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    command: str = "invprob.apps.bench.run",
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark grid and write its outputs into ``out_dir``; return the summary tables.

    ``method_options`` maps a method to its options; they update :data:`QUICK_OPTIONS` (the
    benchmark's iteration budgets). ``stop_after`` ends the run after that many newly computed
    cells (to simulate an interruption).
    """
    from ..data import load_dataset
    from ..priors.pretrained import load_prior

    op_specs = parse_operators(operators)
    names = parse_methods(methods)
    for name in method_options or {}:
        if name not in names:
            raise ValueError(f"method_options: options given for {name!r}, which is not among the methods {names}")
    method_options = {m: {**QUICK_OPTIONS.get(m, {}), **(method_options or {}).get(m, {})} for m in names}
    if n_images < 1:
        raise ValueError(f"n_images: expected >= 1, got {n_images}")
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db: expected a finite number, got {snr_db}")
    config = {
        "prior": str(prior), "dataset": dataset, "split": split, "n_images": n_images,
        "operators": [o.text for o in op_specs], "methods": names, "method_options": method_options,
        "snr_db": snr_db, "seed": seed,
    }
    out = Path(out_dir)
    done = _prepare(out, config, force)
    model = load_prior(prior, device=device)
    images = _images(load_dataset(dataset, split=split, size=model.data_shape[-1]) if dataset != "digits" else load_dataset(dataset, split=split), n_images, model.data_shape)
    info = {"machine": _machine(), "torch": torch.__version__, "date": _now(), "command": command, "seed": seed}
    todo = [(o, m, [i for i in range(n_images) if (o.text, m, i) not in done]) for o in op_specs for m in names]
    computed = 0
    with tqdm(total=len(op_specs) * len(names) * n_images, initial=len(done), desc="bench", disable=not progress) as bar:
        for op_spec, method, indices in todo:
            if stop_after is not None:
                indices = indices[: max(stop_after - computed, 0)]
            if not indices:
                continue
            records = _cells(out, model, op_spec, method, indices, images, config, method_options.get(method, {}), device)
            with open(out / RESULTS, "a") as handle:
                handle.write("".join(json.dumps(r) + "\n" for r in records))
            computed += len(records)
            bar.update(len(records))
    records = _read_results(out)
    summary = summarise(records, [o.text for o in op_specs], names)
    if len(records) == len(op_specs) * len(names) * n_images:
        _write_outputs(out, records, summary, info, config, images, op_specs, names)
    return summary


def _prepare(out: Path, config: dict[str, Any], force: bool) -> set[tuple[str, str, int]]:
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / CONFIG
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        if saved != config:
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
    return {(r["operator"], r["method"], r["image"]) for r in _read_results(out)}


def _read_results(out: Path) -> list[dict[str, Any]]:
    path = out / RESULTS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill mid-write: that cell is recomputed
    return records


def _images(dataset: Any, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    if len(dataset) < n:
        raise ValueError(f"n_images: the dataset split has only {len(dataset)} images, asked for {n}")
    items = [dataset[i] for i in range(n)]
    x = torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items])
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"dataset: images of shape {tuple(x.shape[1:])} do not fit the prior's data_shape {shape}")
    return x


def _noise_generator(seed: int, op_text: str, index: int) -> torch.Generator:
    """The same noise for a given (operator, image) whatever the method or the order of the cells."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(op_text.encode()) * 1009 + index)


def _cells(out: Path, model: Any, op_spec: OperatorSpec, method: str, indices: list[int], images: torch.Tensor,
           config: dict[str, Any], options: dict[str, Any], device: str) -> list[dict[str, Any]]:
    """Solve the images ``indices`` for one (operator, method) as a batch; one record per image.

    Each image's noise depends only on (seed, operator, image), and methods treat a batch as its
    elements solved one by one, so batching changes only the wall time; ``seconds`` is the batch's
    time divided by its size.
    """
    from ..metrics import psnr, snr, ssim

    op = op_spec.build(model.data_shape, config["seed"]).to(device)
    x = images[indices].to(device=device, dtype=model.dtype)
    with torch.no_grad():
        clean = op(x)
        noisy = [add_noise(clean[k : k + 1], snr_db=config["snr_db"], generator=_noise_generator(config["seed"], op_spec.text, i))
                 for k, i in enumerate(indices)]
    y = torch.cat([n[0] for n in noisy])
    sigma = torch.cat([n[1] for n in noisy])
    generator = torch.Generator().manual_seed(config["seed"] * 7919 + indices[0])
    x_hat, seconds = solve_known_noise(op, model, y, method, generator, options, sigma)
    if indices[0] == 0:
        _save_example(out, op_spec, method, x_hat[0])
        with torch.no_grad():
            _save_example(out, op_spec, "A+y", op.pinv(y[:1])[0])
    scores = {"snr": snr(x, x_hat), "psnr": psnr(x, x_hat), "ssim": ssim(x, x_hat)}
    return [
        {"operator": op_spec.text, "method": method, "image": i, **{k: float(v[k_]) for k, v in scores.items()},
         "seconds": seconds / len(indices)}
        for k_, i in enumerate(indices)
    ]


def _save_example(out: Path, op_spec: OperatorSpec, name: str, image: torch.Tensor) -> None:
    buffer = io.BytesIO()
    np.save(buffer, image.detach().cpu().float().numpy())
    (out / "examples").mkdir(exist_ok=True)
    atomic_write(out / "examples" / f"{_slug(op_spec.text)}__{name}.npy", buffer.getvalue())


def _load_example(out: Path, op_spec: OperatorSpec, name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(out / "examples" / f"{_slug(op_spec.text)}__{name}.npy"))


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


def summarise(records: list[dict[str, Any]], operators: list[str], methods: list[str]) -> dict[str, Any]:
    """Mean and standard deviation of each metric per (operator, method)."""
    table: dict[str, dict[str, dict[str, tuple[float, float, int]]]] = {}
    for metric in ("snr", "ssim", "psnr", "seconds"):
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
    """Rows operator, columns method, cells ``mean ± std`` of ``metric``."""
    lines = ["| operator | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for op_text, row in summary[metric].items():
        cells = [f"{row[m][0]:.{digits}f} ± {row[m][1]:.{digits}f}" if m in row else "–" for m in methods]
        lines.append(f"| {op_text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables_markdown(summary: dict[str, Any], methods: list[str], info: dict[str, Any], config: dict[str, Any]) -> str:
    """The three tables (SNR dB, SSIM, seconds per image) with the run's provenance."""
    head = (
        f"- date: {info['date']}\n- machine: {info['machine']}\n- torch: {info['torch']}\n"
        f"- command: `{info['command']}`\n- seed: {info['seed']}\n"
        f"- prior: {config['prior']}; data: {config['dataset']}/{config['split']}, {config['n_images']} images; "
        f"noise: {config['snr_db']} dB SNR\n"
        f"- method options (on top of each method's defaults): `{json.dumps(config['method_options'], sort_keys=True)}`\n"
    )
    return (
        head
        + "\n**SNR (dB), mean ± std over images**\n\n" + markdown_table(summary, "snr", methods)
        + "\n\n**SSIM, mean ± std**\n\n" + markdown_table(summary, "ssim", methods, digits=3)
        + "\n\n**Seconds per image, mean ± std**\n\n" + markdown_table(summary, "seconds", methods)
        + "\n"
    )


def _write_outputs(out: Path, records: list[dict[str, Any]], summary: dict[str, Any], info: dict[str, Any],
                   config: dict[str, Any], images: torch.Tensor, op_specs: list[OperatorSpec], methods: list[str]) -> None:
    text = tables_markdown(summary, methods, info, config)
    atomic_write(out / "tables.md", text.encode())
    buffer = io.StringIO()
    buffer.write("".join(f"# {k}: {v}\n" for k, v in info.items()))
    writer = csv.DictWriter(buffer, fieldnames=["operator", "method", "image", "snr", "psnr", "ssim", "seconds"])
    writer.writeheader()
    writer.writerows(sorted(records, key=lambda r: (r["operator"], r["method"], r["image"])))
    atomic_write(out / "results.csv", buffer.getvalue().encode())
    _figure(out, images[0], op_specs, methods, config, info)


def _figure(out: Path, x: torch.Tensor, op_specs: list[OperatorSpec], methods: list[str],
            config: dict[str, Any], info: dict[str, Any]) -> None:
    from ..plots import image_grid

    rows = [[x, *(_load_example(out, o, name) for name in ["A+y", *methods])] for o in op_specs]
    title = f"{config['prior']} · {config['snr_db']} dB SNR · {info['date']}"
    image_grid(rows, [o.text for o in op_specs], ["truth", "A⁺y", *methods], out / "examples.png", title=title)


def _machine() -> str:
    import os

    return f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, {platform.system()})"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
