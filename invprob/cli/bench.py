"""``invprob bench``: every method on every operator over the same test images, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import command_line


def run(args: argparse.Namespace) -> None:
    from ..apps.bench import PRESETS, check_device, check_out_dir, default_jobs, markdown_table, parse_option, reference_markdown, run

    check_out_dir(args.out, "--out")
    check_device(args.device, "--device")
    options: dict[str, dict[str, Any]] = {}
    for text in args.opt:
        method, key, value = parse_option(text)
        options.setdefault(method, {})[key] = value
    result = run(
        args.out, preset=args.preset, prior=args.prior, dataset=args.dataset, split=args.split, n_images=args.n_images,
        operators=args.operators, methods=args.methods, method_options=options, snr_db=args.snr,
        seed=args.seed, device=args.device, force=args.force, progress=not args.quiet,
        command=command_line(), jobs=args.jobs if args.jobs is not None else default_jobs(),
    )
    labels = [text.partition("=")[0] for text in result.config["methods"]]
    print(markdown_table(result.summary, "snr", labels))
    out = Path(args.out).resolve()
    missing = [p.name for p in result.written if not p.is_file()]
    if result.complete and result.written and not missing:
        reference = PRESETS[args.preset].reference if args.preset else None
        if reference is not None:
            print("\n" + reference_markdown(result.summary, reference, labels))
        print(f"\n{', '.join(p.name for p in result.written)} written to {out} ({result.seconds:.0f} s)")
    else:
        raise RuntimeError(
            f"bench: {result.cells_done} of {result.cells_total} cells are done in {out}"
            + (f" but {', '.join(missing)} could not be written" if missing else "")
            + "; rerun the same command to finish"
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    from ..apps.presets import DEFAULTS, PRESETS

    presets = "; ".join(f"{name}: {p.description}" for name, p in PRESETS.items())
    p = sub.add_parser("bench", help="benchmark methods across operators", description=(
        "Run every method on every operator over the same test images with the same noise; results are "
        "appended as they are computed, so re-running the same command resumes an interrupted run. "
        "One run at a time per --out (the directory is locked)."))
    p.add_argument("--out", default="runs/bench", help="output directory (default: runs/bench)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help=f"a named configuration; options given explicitly override it. {presets}")
    p.add_argument("--prior", default=None, help=f"shipped prior name or checkpoint directory (default: {DEFAULTS['prior']}, or the preset's)")
    p.add_argument("--dataset", default=None, help=f"dataset name (default: {DEFAULTS['dataset']}, or the preset's)")
    p.add_argument("--split", default=None, help=f"dataset split (default: {DEFAULTS['split']}, or the preset's)")
    p.add_argument("--n-images", type=int, default=None, help=f"number of test images (default: {DEFAULTS['n_images']}, or the preset's)")
    p.add_argument("--operators", default=None,
                   help=f"operator spec: comma-separated kind[:param] (default: {DEFAULTS['operators']}, or the preset's)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated method names, or LABEL=METHOD to run a method under a label whose options "
                        f"--opt LABEL.KEY=VALUE sets (default: {DEFAULTS['methods']}, or the preset's)")
    p.add_argument("--opt", action="append", default=[], metavar="LABEL.KEY=VALUE",
                   help="a method option, e.g. csgm.restarts=3 (repeatable; VALUE read as JSON)")
    p.add_argument("--snr", type=float, default=None, help=f"measurement SNR in dB (default: {DEFAULTS['snr_db']:g}, or the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of operators, noise and methods (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="worker processes solving cells side by side, each with threads // N torch threads "
                        "(default: the usable CPU cores, at most 4)")
    p.add_argument("--force", action="store_true", help="discard results of another configuration in --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=run)
