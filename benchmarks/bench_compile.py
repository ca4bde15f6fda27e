"""``torch.compile`` on the prior's fused pass: one iFlow-L evaluation with its backward, eager vs compiled.

    python benchmarks/bench_compile.py            # trumpet-digits, batch 1, 1 thread

Times ``project_with_log_prob`` plus the backward to the image (weights frozen, as inside
``invprob.solve``), the median of 30 repeats after 5 warm-ups, eagerly and through
``torch.compile(dynamic=False)``, the repeats of both interleaved; records the compile time, the largest gradient difference and the
ratio in the ``torch-compile`` section of BENCHMARKS.md (``--dry-run`` prints it). The toolkit adopts
compilation only at >= 1.3x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import header, write_section  # noqa: E402

import invprob  # noqa: E402
from invprob.solvers.base import frozen  # noqa: E402


def evaluation(fn, x: torch.Tensor) -> torch.Tensor:
    """The gradient of ``log p(v) + ||v||^2`` with respect to the image, through ``fn``."""
    x = x.clone().requires_grad_(True)
    v, log_p = fn(x)
    (grad,) = torch.autograd.grad(log_p.sum() + v.pow(2).sum(), x)
    return grad


def interleaved_ms(fns: list, x: torch.Tensor, repeats: int = 30) -> list[float]:
    """Median milliseconds of each function, their repeats interleaved so that load changes hit all alike."""
    for fn in fns:
        for _ in range(5):
            evaluation(fn, x)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times):
            start = time.perf_counter()
            evaluation(fn, x)
            record.append(time.perf_counter() - start)
    return [1000 * statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="trumpet-digits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prior = invprob.load_prior(args.prior)
    entry = invprob.priors.pretrained.describe_prior(args.prior)
    item = invprob.load_dataset(entry["dataset"], split="test")[0]
    x = (item[0] if isinstance(item, (tuple, list)) else item)[None]
    with frozen(prior):
        start = time.perf_counter()
        compiled_fn = torch.compile(prior.project_with_log_prob, dynamic=False)
        evaluation(compiled_fn, x)
        compile_s = time.perf_counter() - start
        eager, compiled = interleaved_ms([prior.project_with_log_prob, compiled_fn], x)
        diff = float((evaluation(prior.project_with_log_prob, x) - evaluation(compiled_fn, x)).abs().max())
    body = (header(" ".join(["python benchmarks/bench_compile.py", *sys.argv[1:]]))
            + f"- prior {args.prior}, batch 1, {args.threads} torch thread(s), median of 30 interleaved repeats after 5 warm-ups; first compiled call in a fresh process unless the inductor cache holds it\n\n"
            "| eager ms | compiled ms | speed-up | first compiled call s | max gradient difference |\n|---|---|---|---|---|\n"
            f"| {eager:.2f} | {compiled:.2f} | {eager / compiled:.2f}x | {compile_s:.0f} | {diff:.2g} |\n")
    if args.dry_run:
        print(body)
    else:
        write_section("torch-compile", "torch.compile on the prior's fused pass", body)
    print(body)


if __name__ == "__main__":
    main()
