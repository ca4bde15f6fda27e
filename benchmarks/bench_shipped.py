"""The shipped priors measured from their files: size, loading time, test reconstruction error, bits/dim.

Usage: ``python benchmarks/bench_shipped.py [--threads T]``. For every prior of
``invprob.list_priors()``: parameters, weight-file size, seconds of ``load_prior`` (checksums
included), the relative reconstruction error ``||x - f(f^dagger(x))|| / ||x||`` over the whole
test split of its dataset (mean, median, 95th percentile), milliseconds per image of ``project``
(batches of 64), and test bits per dimension for priors with an exact ``log_prob`` (RealNVP).
Writes the ``shipped`` section of ``benchmarks/BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import header, write_section  # noqa: E402
from invprob.data import load_dataset  # noqa: E402
from invprob.metrics import relative_error  # noqa: E402
from invprob.priors.pretrained import PRETRAINED_DIR, describe_prior, list_priors, load_prior  # noqa: E402
from invprob.training import bits_per_dim  # noqa: E402
from invprob.checkpoint import checkpoint_files  # noqa: E402

BATCH = 64


def measure(name: str) -> dict[str, float | str]:
    """The row of one shipped prior."""
    start = time.perf_counter()
    prior = load_prior(name)
    load_seconds = time.perf_counter() - start
    entry = describe_prior(name)
    size = prior.data_shape[-1]
    test = load_dataset(entry["dataset"], split="test")
    if tuple(test[0].shape) != tuple(prior.data_shape):  # a generated dataset drawn at another size
        test = load_dataset(entry["dataset"], split="test", size=size)
    x = torch.stack([test[i] for i in range(len(test))]).to(prior.dtype)
    with torch.no_grad():
        start = time.perf_counter()
        recon = torch.cat([prior.project(chunk) for chunk in x.split(BATCH)])
        project_ms = 1000 * (time.perf_counter() - start) / len(x)
        error = relative_error(x, recon)
        bpd = "—"
        if prior.log_prob_kind == "exact":
            log_p = torch.cat([prior.log_prob(chunk) for chunk in x.split(BATCH)])
            bpd = f"{float(bits_per_dim(log_p, prior.data_dim).mean()):.2f}"
    q = torch.quantile(error, torch.tensor([0.5, 0.95], dtype=error.dtype))
    return {
        "name": name, "class": type(prior).__name__, "shape": "×".join(map(str, prior.data_shape)),
        "latent": prior.latent_dim, "params": sum(p.numel() for p in prior.parameters()),
        "mib": sum(f.stat().st_size for f in checkpoint_files(PRETRAINED_DIR / name)) / 2**20, "load": load_seconds,
        "n_test": len(x), "mean": float(error.mean()), "median": float(q[0]), "q95": float(q[1]),
        "project_ms": project_ms, "bpd": bpd,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| prior | class | image | latent | parameters | MiB | load s | test images | rel. error mean | median | 95th pct | project ms/image | test bits/dim |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['class']} | {r['shape']} | {r['latent']} | {r['params']:,} | {r['mib']:.1f} | {r['load']:.2f} "
            f"| {r['n_test']} | {r['mean']:.3f} | {r['median']:.3f} | {r['q95']:.3f} | {r['project_ms']:.2f} | {r['bpd']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(name) for name in list_priors()]
    body = (
        header()
        + "- relative error: ||x - f(f†(x))|| / ||x|| per test image (for RealNVP, a bijection, it is round-off); "
        "bars of issue 6: trumpet-digits ≤ 0.10, trumpet-ellipses ≤ 0.15\n\n"
        + table(rows)
    )
    write_section("shipped", "Shipped priors, measured from their files", body)
    print(table(rows))


if __name__ == "__main__":
    main()
