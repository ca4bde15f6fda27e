"""``invprob demo``: compressed sensing of a few test images with every MAP method."""

from __future__ import annotations

import argparse

from ..apps.presets import DEFAULT_PRIOR, DEMO_N_IMAGES, MAP_METHODS


def run(args: argparse.Namespace) -> None:
    from ..apps.demo import METHODS, run_demo

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else METHODS
    run_demo(args.out, prior=args.prior, n_images=args.n_images, seed=args.seed, methods=methods, progress=not args.quiet)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = sub.add_parser("demo", help="compressed sensing of test images with every MAP method",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=(
        "Measure a few test images of the prior's dataset with RandomGaussian(m=250) at 30 dB SNR, "
        "reconstruct them with every MAP method, print a table (SNR, SSIM, seconds per image) and "
        "write OUT/demo.png."))
    p.add_argument("--out", default="runs/demo", help="output directory of the figure")
    p.add_argument("--prior", default=DEFAULT_PRIOR, help="shipped prior name or checkpoint directory")
    p.add_argument("--n-images", type=int, default=DEMO_N_IMAGES, help="number of test images (1 to the test split's size)")
    p.add_argument("--methods", default=",".join(MAP_METHODS),
                   help="comma-separated methods to compare (see `invprob methods`)")
    p.add_argument("--seed", type=int, default=0, help="seed of operator, noise and methods")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=run)
