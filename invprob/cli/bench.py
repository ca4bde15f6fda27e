"""``invprob bench``: every method on every operator over the same test images, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import command_line


def run(args: argparse.Namespace) -> None:
    from ..apps.bench import markdown_table, parse_option, run

    options: dict[str, dict[str, Any]] = {}
    for text in args.opt:
        method, key, value = parse_option(text)
        options.setdefault(method, {})[key] = value
    summary = run(
        args.out, prior=args.prior, dataset=args.dataset, split=args.split, n_images=args.n_images,
        operators=args.operators, methods=args.methods, method_options=options, snr_db=args.snr,
        seed=args.seed, device=args.device, force=args.force, progress=not args.quiet,
        command=command_line(),
    )
    methods = [m.strip() for m in args.methods.split(",")]
    print(markdown_table(summary, "snr", methods))
    print(f"\nTables, CSV and figure written to {Path(args.out).resolve()}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = sub.add_parser("bench", help="benchmark methods across operators", description=(
        "Run every method on every operator over the same test images with the same noise; results are "
        "appended as they are computed, so re-running the same command resumes an interrupted run."))
    p.add_argument("--out", default="runs/bench", help="output directory (default: runs/bench)")
    p.add_argument("--prior", default="trumpet-digits", help="shipped prior name or checkpoint directory")
    p.add_argument("--dataset", default="digits", help="dataset name (default: digits)")
    p.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--n-images", type=int, default=10, help="number of test images (default: 10)")
    p.add_argument("--operators", default="gauss:250,randmask:0.15,sr:4,block:12",
                   help="operator spec: comma-separated kind[:param] with kinds gauss, randmask, sr, block, ct")
    p.add_argument("--methods", default="pinv,tv,csgm,dip,iflow,iflow-l", help="comma-separated method names")
    p.add_argument("--opt", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method option, e.g. csgm.restarts=3 (repeatable; VALUE read as JSON)")
    p.add_argument("--snr", type=float, default=30.0, help="measurement SNR in dB (default: 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of operators, noise and methods (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--force", action="store_true", help="discard results of another configuration in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)
