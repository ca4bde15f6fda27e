"""``invprob solve``: reconstruct one image (simulated or given measurement)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import key_values


def run(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from ..data import read_image, write_image
    from ..operators import add_noise
    from ..operators.spec import parse_operator
    from ..priors.pretrained import load_prior
    from ..solvers import solve

    op_spec = parse_operator(args.operator, name="--operator")
    prior = load_prior(args.prior, device=args.device)
    op = op_spec.build(prior.data_shape, args.seed).to(args.device)
    options = key_values(args.opt, "--opt")
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
        from ..metrics import snr

        line += f", SNR {float(snr(truth.unsqueeze(0), result.x_hat.unsqueeze(0))[0]):.2f} dB"
    print(line)
    print(f"wrote {out / 'reconstruction.npz'} and {out / 'reconstruction.png'}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
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
    p.set_defaults(handler=run)
