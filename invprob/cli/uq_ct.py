"""``invprob uq-ct``: limited-angle CT with posterior uncertainty maps and calibration."""

from __future__ import annotations

import argparse

from ._common import key_values


def run(args: argparse.Namespace) -> None:
    from ..apps.ct_uq import ct_workflow, parse_angles

    levels = [float(v) for v in args.levels.split(",") if v.strip()]
    result = ct_workflow(
        args.phantom, measurement=args.measurement, sigma=args.sigma, out=args.out,
        prior=args.prior, angles=parse_angles(args.angles), snr_db=args.snr, sampler=args.sampler,
        n_samples=args.n_samples, calibration=args.calibration, levels=levels,
        map_options=key_values(args.map_opt, "--map-opt"), sampler_options=key_values(args.sampler_opt, "--sampler-opt"),
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
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
    p.set_defaults(handler=run)
