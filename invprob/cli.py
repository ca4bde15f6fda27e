"""The ``invprob`` command line (also ``python -m invprob``).

Errors are printed as one line (``invprob: error: ...``) with a non-zero exit code; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_ERROR = 1


def _bench(args: argparse.Namespace) -> None:
    from .bench import markdown_table, parse_option, run

    options: dict[str, dict[str, Any]] = {}
    for text in args.opt:
        method, key, value = parse_option(text)
        options.setdefault(method, {})[key] = value
    summary = run(
        args.out, prior=args.prior, dataset=args.dataset, split=args.split, n_images=args.n_images,
        operators=args.operators, methods=args.methods, method_options=options, snr_db=args.snr,
        seed=args.seed, device=args.device, force=args.force, progress=not args.quiet,
        command=_command_line(),
    )
    methods = [m.strip() for m in args.methods.split(",")]
    print(markdown_table(summary, "snr", methods))
    print(f"\nTables, CSV and figure written to {Path(args.out).resolve()}")


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.out, prior=args.prior, n_images=args.n_images, seed=args.seed, progress=not args.quiet)


def _priors(args: argparse.Namespace) -> None:
    from .priors.pretrained import describe_prior, list_priors

    if args.name:
        entry = describe_prior(args.name)
        print(entry.pop("model_card") or json.dumps(entry, indent=2))
        return
    shipped = list_priors()
    if not shipped:
        print("no shipped priors are installed")
    for name, description in shipped.items():
        print(f"{name:20s} {description}")


def _solve(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from .bench import parse_operators
    from .data import read_image, write_image
    from .operators import add_noise
    from .priors.pretrained import load_prior
    from .solvers import solve

    prior = load_prior(args.prior, device=args.device)
    (op_spec,) = parse_operators(args.operator)
    op = op_spec.build(prior.data_shape, args.seed).to(args.device)
    options = _key_values(args.opt, "--opt")
    truth = None
    if args.measurement:
        y = torch.from_numpy(np.load(args.measurement)).to(device=args.device, dtype=prior.dtype)
    else:
        truth = read_image(args.image, prior.data_shape).to(device=args.device, dtype=prior.dtype)
        with torch.no_grad():
            y, sigma = add_noise(op(truth.unsqueeze(0)), snr_db=args.snr, generator=torch.Generator().manual_seed(args.seed))
        y = y[0]
    result = solve(op, prior, y, args.method, generator=torch.Generator().manual_seed(args.seed), **options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"x_hat": result.x_hat.detach().cpu().numpy()}
    for key in ("mean", "std"):
        value = getattr(result, key)
        if value is not None:
            arrays[key] = value.detach().cpu().numpy()
    np.savez(out / "reconstruction.npz", **arrays)
    write_image(out / "reconstruction.png", result.x_hat)
    line = f"{args.method}: {result.seconds:.2f} s"
    if truth is not None:
        from .metrics import snr

        line += f", SNR {float(snr(truth.unsqueeze(0), result.x_hat.unsqueeze(0))[0]):.2f} dB"
    print(line)
    print(f"wrote {out / 'reconstruction.npz'} and {out / 'reconstruction.png'}")


def _uq_ct(args: argparse.Namespace) -> None:
    from .uq_ct import ct_workflow, parse_angles

    levels = [float(v) for v in args.levels.split(",") if v.strip()]
    result = ct_workflow(
        args.phantom, measurement=args.measurement, sigma=args.sigma, out=args.out,
        prior=args.prior, angles=parse_angles(args.angles), snr_db=args.snr, sampler=args.sampler,
        n_samples=args.n_samples, calibration=args.calibration, levels=levels,
        map_options=_key_values(args.map_opt, "--map-opt"), sampler_options=_key_values(args.sampler_opt, "--sampler-opt"),
        seed=args.seed, device=args.device, progress=not args.quiet,
    )
    summary = result.summary
    for name, values in (summary["metrics"] or {}).items():
        print(f"{name:5s} SNR {values['snr_db']:6.2f} dB  PSNR {values['psnr_db']:6.2f} dB  SSIM {values['ssim']:.3f}")
    if summary["wedge_energy_ratio"] is not None:
        print(f"Fourier deviation energy, inside / outside the missing wedge: {summary['wedge_energy_ratio']:.2f}")
    if summary["calibration"] is not None:
        cal = summary["calibration"]
        pairs = ", ".join(f"{level:.0%}: {cov:.3f}" for level, cov in zip(cal["levels"], cal["coverage"]))
        print(f"coverage over {len(cal['phantoms'])} phantom(s): {pairs}")
    print(f"wrote {', '.join(summary['files'].values())}")


TRAINERS = {
    "trumpet": ("TRUMPET", "train_trumpet", True),
    "realnvp": ("RealNVP", "train_flow", False),
    "nif": ("NIF", "train_nif", True),
    "relaxed": ("RelaxedInjectiveFlow", "train_relaxed_flow", True),
}


def _key_values(items: list[str], flag: str) -> dict[str, Any]:
    """Parse repeated ``key=value`` arguments; values are read as JSON when they parse, else kept as text."""
    out: dict[str, Any] = {}
    for text in items:
        key, sep, raw = text.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag}: expected key=value, got {text!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _train(args: argparse.Namespace) -> None:
    import torch

    import invprob.priors as priors
    import invprob.training as training

    from .data import load_dataset

    class_name, function_name, injective = TRAINERS[args.family]
    data_options = {"size": args.size} if args.size else {}
    train_set = load_dataset(args.data, split="train", **data_options)
    test_set = load_dataset(args.data, split="test", **data_options)
    shape = tuple(train_set[0].shape)
    torch.manual_seed(args.seed)
    arch = _key_values(args.arch, "--arch")
    prior = getattr(priors, class_name)(shape, args.latent_dim, **arch) if injective else getattr(priors, class_name)(shape, **arch)
    result = getattr(training, function_name)(
        prior, train_set, args.out, val_dataset=test_set, resume=args.resume, command=_command_line(),
        seed=args.seed, progress=not args.quiet, **_key_values(args.opt, "--opt"),
    )
    print(json.dumps(result.get("metrics", {}), indent=2))
    print(f"prior saved to {Path(args.out).resolve()} (load it with invprob.load_prior(path))")


def _command_line() -> str:
    return "invprob " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``invprob`` command."""
    parser = argparse.ArgumentParser(prog="invprob", description="Imaging inverse problems with generative priors.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="compressed sensing of digits with every MAP method", description=(
        "Measure a few test digits with RandomGaussian(m=250) at 30 dB SNR, reconstruct them with every "
        "MAP method using a shipped prior, print a table and write a figure."))
    p.add_argument("--out", default="runs/demo", help="output directory of the figure (default: runs/demo)")
    p.add_argument("--prior", default="trumpet-digits", help="shipped prior name or checkpoint directory")
    p.add_argument("--n-images", type=int, default=4, help="number of test digits (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of operator, noise and methods (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_demo)

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
    p.set_defaults(handler=_bench)

    p = sub.add_parser("priors", help="list or describe the shipped priors",
                       description="List the shipped pretrained priors, or print one model card.")
    p.add_argument("name", nargs="?", help="a shipped prior to describe")
    p.set_defaults(handler=_priors)

    p = sub.add_parser("solve", help="reconstruct one image", description=(
        "Reconstruct an image: either simulate measurements of --image with --operator at --snr dB, "
        "or reconstruct a given measurement --measurement (.npy of the operator's output shape)."))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="ground-truth image (PNG/JPEG or .npy) to measure and reconstruct")
    source.add_argument("--measurement", help=".npy file holding the measurement y")
    p.add_argument("--prior", default="trumpet-digits", help="shipped prior name or checkpoint directory")
    p.add_argument("--operator", default="gauss:250", help="one operator spec, e.g. gauss:250 or sr:4")
    p.add_argument("--method", default="iflow-l", help="reconstruction method (default: iflow-l)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="a method option (repeatable)")
    p.add_argument("--snr", type=float, default=30.0, help="SNR in dB of simulated noise (default: 30)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--out", default="runs/solve", help="output directory (default: runs/solve)")
    p.set_defaults(handler=_solve)

    p = sub.add_parser("uq-ct", help="limited-angle CT with posterior uncertainty maps and calibration", description=(
        "Measure a phantom with limited-angle CT (or take a measured sinogram), reconstruct it by FBP and iFlow-L, "
        "draw posterior samples, and write uncertainty maps (.npz and one PNG, with the Fourier spectrum of the mean "
        "absolute deviation and the missing wedge outlined), a JSON summary (SNR/PSNR/SSIM, wedge energy ratio, "
        "coverage of central credible intervals) and a reliability plot."))
    p.add_argument("--phantom", default=None,
                   help="ellipses:K (ellipse test phantom K, 0-99), shepp-logan, or an image file "
                        "(PNG/JPEG, or .npy with values in [-1, 1]); default: ellipses:0")
    p.add_argument("--measurement", help=".npy sinogram (C, n_angles, N) to reconstruct instead of a phantom; needs --sigma")
    p.add_argument("--sigma", type=float, default=None, help="noise std of --measurement")
    p.add_argument("--prior", default="trumpet-ellipses", help="shipped prior name or checkpoint directory "
                   "(square images; default: trumpet-ellipses)")
    p.add_argument("--angles", default="30:150:30",
                   help="projection angles in degrees in [0, 180): FIRST:LAST:COUNT (evenly spaced, ends included) "
                        "or a comma-separated list (default: 30:150:30)")
    p.add_argument("--snr", type=float, default=30.0, help="SNR in dB (> 0) of the simulated noise (default: 30)")
    p.add_argument("--sampler", choices=("svi", "langevin"), default="svi", help="posterior sampler (default: svi)")
    p.add_argument("--n-samples", type=int, default=64,
                   help="posterior samples per measurement; a level l needs at least (1+l)/(1-l) (default: 64)")
    p.add_argument("--calibration", type=int, default=4,
                   help="ellipse test phantoms added to the calibration set (default: 4; 0: the phantom only)")
    p.add_argument("--levels", default="0.5,0.8,0.9,0.95",
                   help="nominal levels of the central credible intervals checked (default: 0.5,0.8,0.9,0.95)")
    p.add_argument("--map-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an iflow-l option, e.g. iterations=500 (repeatable; VALUE read as JSON)")
    p.add_argument("--sampler-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampler option, e.g. steps=500 for svi or step_size=1e-4 for langevin (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of noise and methods (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--out", default="runs/uq-ct", help="output directory (default: runs/uq-ct)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=_uq_ct)

    p = sub.add_parser("train", help="train a prior on a dataset", description=(
        "Train a prior and save it as a checkpoint directory (weights.safetensors + config.json). Checkpoints "
        "are written atomically; re-run with --resume after an interruption to continue where it stopped."))
    p.add_argument("family", choices=sorted(TRAINERS), help="prior family")
    p.add_argument("--data", default="digits", help="dataset name (see invprob.data.list_datasets())")
    p.add_argument("--size", type=int, default=None, help="image size for datasets that take one (ellipses)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--latent-dim", type=int, default=64, help="latent dimension of injective priors (default: 64)")
    p.add_argument("--arch", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture argument of the prior class, e.g. hidden=16 (repeatable)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="training option, e.g. mse_steps=2500 or steps=3000 (repeatable; see the train_* docstrings)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except KeyboardInterrupt:
        print("invprob: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line for users; --debug for developers
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"invprob: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
