"""Budgets of one method compared on the default bench problems, one image at a time.

    python benchmarks/bench_method_defaults.py --n-images 4 \
        --variant 'csgm-old=csgm:{"lr": 0.05, "iterations": 500}' --variant 'csgm=csgm:{}' \
        --variant 'dip-full=dip:{"stop_at_noise": false}' --variant 'dip=dip:{}'

Each variant is ``LABEL=METHOD:OPTIONS`` (options as JSON, on top of the method's defaults). Every
variant sees the same images and noisy measurements as ``invprob bench`` (same seeds); methods that
take a noise level get the known one. Writes the mean SNR, mean seconds per image and the iterations
of each image into the ``method-defaults`` section of BENCHMARKS.md (``--dry-run`` prints it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import header, write_section  # noqa: E402

from invprob import solve  # noqa: E402
from invprob.apps.bench import _images, _load_prior, measure  # noqa: E402
from invprob.apps.presets import DEFAULTS  # noqa: E402
from invprob.metrics import snr  # noqa: E402
from invprob.operators.spec import parse_operators  # noqa: E402
from invprob.solvers.base import options_model  # noqa: E402


def parse_variant(text: str) -> tuple[str, str, dict]:
    label, _, rest = text.partition("=")
    method, _, raw = rest.partition(":")
    if not label or not method:
        raise SystemExit(f"--variant: expected LABEL=METHOD:OPTIONS, got {text!r}")
    return label, method, json.loads(raw) if raw else {}


def run_variant(model, images, ops, method: str, options: dict) -> list[tuple[float, float, list[int]]]:
    """Per operator: mean SNR, mean seconds per image, iterations of each image."""
    rows = []
    for spec in ops:
        op = spec.build(model.data_shape, 0)
        values, seconds, iterations = [], [], []
        for i in range(images.shape[0]):
            x = images[i : i + 1]
            y, sigma = measure(op, x[0], spec.text, i, DEFAULTS["snr_db"], 0)
            extra = {"sigma": float(sigma[0])} if "sigma" in options_model(method).model_fields else {}
            start = time.perf_counter()
            result = solve(op, model, y, method, generator=torch.Generator().manual_seed(i), progress=False, **extra, **options)
            seconds.append(time.perf_counter() - start)
            values.append(float(snr(x, result.x_hat)[0]))
            iterations.append(int(torch.as_tensor(result.extras.get("iterations", 0)).max()))
        rows.append((statistics.fmean(values), statistics.fmean(seconds), iterations))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, metavar="LABEL=METHOD:OPTIONS")
    parser.add_argument("--n-images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = _load_prior(DEFAULTS["prior"], None, "cpu")
    images = _images(DEFAULTS["dataset"], DEFAULTS["split"], args.n_images, model.data_shape)
    ops = parse_operators(DEFAULTS["operators"])
    lines = ["| variant | " + " | ".join(o.text for o in ops) + " |", "|---" * (len(ops) + 1) + "|"]
    for text in args.variant:
        label, method, options = parse_variant(text)
        rows = run_variant(model, images, ops, method, options)
        cells = [f"{s:.2f} dB / {t:.2f} s / {'-'.join(map(str, sorted(set(it))))} it" for s, t, it in rows]
        lines.append(f"| {label} (`{method}` {json.dumps(options)}) | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    body = (header(" ".join(["python benchmarks/bench_method_defaults.py", *sys.argv[1:]]))
            + f"- prior {DEFAULTS['prior']}, {args.n_images} {DEFAULTS['dataset']} test images, {args.threads} torch thread(s); "
            "cells: mean SNR / mean seconds per image / iterations run (range over images)\n\n" + "\n".join(lines) + "\n")
    if args.dry_run:
        print(body)
    else:
        write_section("method-defaults", "Method defaults: budgets compared on the default bench problems", body)


if __name__ == "__main__":
    main()
