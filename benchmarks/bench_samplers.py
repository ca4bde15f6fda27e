"""Posterior samplers on test digits: MMSE SNR, single-sample SNR, diversity and seconds per sample.

For two problems -- inpainting of the bottom half (the top half is observed) and compressed sensing
with ``RandomGaussian(m)`` (``m = 250`` by default) -- and noise ``y = A x + N(0, sigma^2 I)``,
every sampler (svi, avi, ambient-vi, langevin (MALA), pl-mcmc) draws ``S`` posterior samples per
test image; the table reports, averaged over the images, the SNR of the posterior mean (MMSE),
the mean SNR of single samples, the diversity (mean pairwise distance) and the wall seconds per
posterior sample (``Result.seconds / S``; AVI's one-off training time is reported separately).
The MAP estimate of ``iflow-l`` is listed for comparison. Writes the ``samplers`` section of
``benchmarks/BENCHMARKS.md``.

Run: ``python benchmarks/bench_samplers.py --prior trumpet-digits`` (a shipped prior name or a
checkpoint directory; the prior must take ``1 x 32 x 32`` digits). ``--quick`` shortens every run
(for checking the script, not for the record: about 3 minutes for ``--images 2 --samples 4`` with a
small TRUMPET on 2 CPU cores); the full settings do about 20 times more work per method.
``--dry-run`` prints the section instead of writing it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import header, write_section  # noqa: E402
from invprob import uq  # noqa: E402
from invprob.metrics import snr  # noqa: E402
from invprob.data.digits import digits_dataset  # noqa: E402
from invprob.operators import RandomGaussian, from_matrix  # noqa: E402
from invprob.operators.base import LinearOperator  # noqa: E402
from invprob.priors.base import Prior  # noqa: E402
from invprob.priors.pretrained import load_prior  # noqa: E402
from invprob.solvers import solve  # noqa: E402
from invprob.training import train_amortized  # noqa: E402

SAMPLERS = ("svi", "avi", "ambient-vi", "langevin", "pl-mcmc")


def settings(sigma: float, n_samples: int, quick: bool) -> dict[str, dict]:
    """Options of each method (Whang et al. 2021, app. C.3, where it gives them; ``quick`` divides the work by ~20)."""
    scale = 20 if quick else 1
    vi = dict(sigma=sigma, steps=1000 // scale, lr=1e-3, batch_size=32, n_samples=n_samples)
    chains, per_chain = 4, max(1, n_samples // 4)
    return {
        "svi": vi,
        "ambient-vi": vi,
        "avi-train": dict(sigma=sigma, steps=4000 // scale, lr=1e-3, batch_size=64),
        "avi": dict(n_samples=n_samples),
        "langevin": dict(
            sigma=sigma, adjusted=True, step_size=1e-4, target_acceptance=0.57, n_chains=chains,
            n_samples=per_chain, burn_in=1000 // scale, thin=100 // scale,
        ),
        "pl-mcmc": dict(
            sigma=sigma, perturb_std=0.05, n_chains=chains, n_samples=per_chain, burn_in=1000 // scale,
            thin=125 // scale,
        ),
        "iflow-l": dict(sigma=sigma),
    }


def bottom_half_inpainting(shape: tuple[int, ...]) -> LinearOperator:
    """Observe the top half of the image: a selection matrix over the pixels of the upper rows."""
    c, h, w = shape
    kept = torch.zeros(c, h, w, dtype=torch.bool)
    kept[:, : h // 2] = True
    rows = torch.nonzero(kept.flatten()).squeeze(1)
    matrix = torch.zeros(rows.numel(), math.prod(shape))
    matrix[torch.arange(rows.numel()), rows] = 1.0
    return from_matrix(matrix, shape)


def run_method(
    method: str, op: LinearOperator, prior: Prior, y: torch.Tensor, x: torch.Tensor, opts: dict
) -> dict[str, float]:
    """Solve every measurement of ``y`` and summarise against the truth ``x`` (means over images)."""
    result = solve(op, prior, y, method, generator=torch.Generator().manual_seed(0), **opts)
    if result.samples is None:
        return {"mmse": float(snr(x, result.x_hat).mean()), "seconds": result.seconds / len(y)}
    n = result.samples.shape[1]
    return {
        "mmse": float(uq.mmse_snr(result.samples, x, dim=1).mean()),
        "single": float(uq.sample_snr(result.samples, x, dim=1).mean()),
        "diversity": float(uq.diversity(result.samples, dim=1).mean()),
        "seconds": result.seconds / (len(y) * n),
    }


def problem_rows(name: str, op: LinearOperator, prior: Prior, x: torch.Tensor, sigma: float, opts: dict) -> list[str]:
    y = op(x)
    y = y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    rows = []
    start = time.perf_counter()
    model = train_amortized(op, prior, generator=torch.Generator().manual_seed(2), **opts["avi-train"])
    train_seconds = time.perf_counter() - start
    for method in SAMPLERS:
        method_opts = dict(opts[method], amortized=model) if method == "avi" else opts[method]
        s = run_method(method, op, prior, y, x, method_opts)
        note = f" (+ {train_seconds:.0f} s training, once)" if method == "avi" else ""
        rows.append(
            f"| {name} | {method} | {s['mmse']:.2f} | {s['single']:.2f} | {s['diversity']:.3f} | "
            f"{s['seconds']:.4f}{note} |"
        )
        print(rows[-1], flush=True)
    s = run_method("iflow-l", op, prior, y, x, opts["iflow-l"])
    rows.append(f"| {name} | iflow-l (MAP) | {s['mmse']:.2f} | - | - | {s['seconds']:.4f} per image |")
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prior", default="trumpet-digits", help="shipped prior name or checkpoint directory")
    parser.add_argument("--images", type=int, default=8, help="test digits per problem")
    parser.add_argument("--samples", type=int, default=32, help="posterior samples per image")
    parser.add_argument("--m", type=int, default=250, help="measurements of the Gaussian operator")
    parser.add_argument("--sigma", type=float, default=0.05, help="noise std (images in [-1, 1])")
    parser.add_argument("--problem", choices=("all", "inpaint", "gauss"), default="all",
                        help="one problem only (its own section, so two processes can share the cores)")
    parser.add_argument("--quick", action="store_true", help="short runs, to check the script")
    parser.add_argument("--dry-run", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()

    prior = load_prior(args.prior).eval()
    data = digits_dataset("test")
    x = torch.stack([data[i] for i in range(args.images)]).to(prior.dtype)
    if tuple(x.shape[1:]) != tuple(prior.data_shape):
        raise SystemExit(f"prior {args.prior}: data_shape {prior.data_shape} does not match the digits {x.shape[1:]}")
    opts = settings(args.sigma, args.samples, args.quick)
    problems = {
        "inpaint": ("inpaint bottom half", bottom_half_inpainting(prior.data_shape)),
        "gauss": (f"RandGauss({args.m})", RandomGaussian(prior.data_shape, args.m, seed=0)),
    }
    if args.problem != "all":
        problems = {args.problem: problems[args.problem]}
    rows = []
    for name, op in problems.values():
        rows += problem_rows(name, op, prior, x, args.sigma, opts)
    body = (
        header()
        + f"- prior: `{args.prior}`; {args.images} test digits; {args.samples} samples per image; "
        f"noise sigma = {args.sigma} (also the likelihood sigma){'; QUICK settings' if args.quick else ''}\n\n"
        "| problem | method | MMSE SNR (dB) | single-sample SNR (dB) | diversity | seconds / sample |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    if args.dry_run:
        print(body)
    else:
        suffix = "" if args.problem == "all" else f"-{args.problem}"
        write_section(f"samplers{suffix}", f"Posterior samplers on test digits{suffix.replace('-', ': ')}", body)


if __name__ == "__main__":
    main()
