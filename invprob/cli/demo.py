"""``invprob demo``: compressed sensing of a few test digits with every MAP method."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> None:
    from ..apps.demo import run_demo

    run_demo(args.out, prior=args.prior, n_images=args.n_images, seed=args.seed, progress=not args.quiet)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = sub.add_parser("demo", help="compressed sensing of digits with every MAP method", description=(
        "Measure a few test digits with RandomGaussian(m=250) at 30 dB SNR, reconstruct them with every "
        "MAP method using a shipped prior, print a table and write a figure."))
    p.add_argument("--out", default="runs/demo", help="output directory of the figure (default: runs/demo)")
    p.add_argument("--prior", default="trumpet-digits", help="shipped prior name or checkpoint directory")
    p.add_argument("--n-images", type=int, default=4, help="number of test digits (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of operator, noise and methods (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)
