"""``invprob uq-ct``: limited-angle CT with posterior uncertainty maps, calibrated intervals and a reach check."""

from __future__ import annotations

import argparse

from ._common import key_values


def _calibrate(text: str) -> int | str:
    """``--calibrate``: a number of phantoms or a saved calibration file."""
    try:
        return int(text)
    except ValueError:
        return text


def _model_error(text: str | None) -> float | str | None:
    """``--model-error``: ``auto``, a number, or absent."""
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--model-error: expected 'auto' or a std >= 0, got {text!r}") from None


def _format_levels(levels: list[float], values: list[float | None]) -> str:
    return ", ".join(f"{level:.0%}: {'—' if v is None else f'{v:.3f}'}" for level, v in zip(levels, values))


def run(args: argparse.Namespace) -> None:
    from ..apps.ct_uq import ct_workflow, parse_angles, parse_levels

    levels = parse_levels(args.levels)
    calibrate = _calibrate(args.calibrate) if args.calibrate is not None else None
    result = ct_workflow(
        args.phantom, measurement=args.measurement, sigma=args.sigma, out=args.out,
        prior=args.prior, angles=parse_angles(args.angles), snr_db=args.snr, sampler=args.sampler,
        n_samples=args.n_samples, evaluation=args.eval_phantoms, calibrate=calibrate or None, levels=levels,
        map_options=key_values(args.map_opt, "--map-opt"), sampler_options=key_values(args.sampler_opt, "--sampler-opt"),
        window=(args.window_low, args.window_high), model_error=_model_error(args.model_error),
        residual=None if args.residual == "none" else args.residual, seed=args.seed, device=args.device, progress=not args.quiet,
    )
    summary = result.summary
    for name, values in (summary["metrics"] or {}).items():
        print(f"{name:5s} SNR {values['snr_db']:6.2f} dB  PSNR {values['psnr_db']:6.2f} dB  SSIM {values['ssim']:.3f}")
    if summary["wedge_energy_ratio"] is not None:
        print(f"Fourier deviation energy, inside / outside the unmeasured wedge: {summary['wedge_energy_ratio']:.2f}")
    reach = summary["reach"]
    print(("OUT OF THE PRIOR'S REACH: " if reach["out_of_reach"] else "within the prior's reach: ") + reach["reason"])
    cov = summary["coverage"]
    if cov is not None:
        n = len(cov["phantoms"])
        print(f"raw coverage over {n} phantom(s): {_format_levels(cov['levels'], cov['raw'])}")
        if cov["calibrated"] is not None:
            print(f"calibrated coverage over {n} phantom(s): {_format_levels(cov['levels'], cov['calibrated'])}")
    cal = summary["calibration"]
    if cal is not None and not cal["claimed_for_this_input"]:
        print("calibrated intervals are not claimed to hold for this input (out of the prior's reach)")
    if summary["resumed_stages"]:
        print(f"resumed {len(summary['resumed_stages'])} finished stage(s) from {args.out}/stages")
    files = summary["files"]
    print(f"figure: {files['figure']}")
    print(f"summary (JSON): {files['summary']}")
    others = [path for key, path in files.items() if key not in ("figure", "summary")]
    print(f"also wrote: {', '.join(others)}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = sub.add_parser("uq-ct", help="limited-angle CT with posterior uncertainty maps and calibrated intervals",
                       description=(
        "Measure a phantom with limited-angle CT (or take a measured sinogram), reconstruct it by FBP and the MAP (iFlow-L from the prior's projection of a TV reconstruction), "
        "draw posterior samples, and write uncertainty maps (.npz and one PNG, with the Fourier spectrum of the mean "
        "absolute deviation and the unmeasured wedge marked), a JSON summary (SNR/PSNR/SSIM, wedge energy ratio, "
        "chi-square reach check, raw and calibrated coverage of pixel-wise intervals) and a reliability plot. "
        "Each finished reconstruction is saved in OUT/stages: rerunning the same command resumes."))
    p.add_argument("--phantom", default=None,
                   help="ellipses:K (ellipse test phantom K, 0-99), shepp-logan, a single-slice DICOM file (.dcm; "
                        "needs the [dicom] extra), or an image file (PNG/JPEG, or .npy with values in [-1, 1]); "
                        "default: ellipses:0")
    p.add_argument("--measurement", help=".npy sinogram (C, n_angles, N) to reconstruct instead of a phantom; needs --sigma")
    p.add_argument("--sigma", type=float, default=None, help="noise std of --measurement")
    p.add_argument("--prior", default="trumpet-ellipses", help="shipped prior name or checkpoint directory "
                   "(square images; default: trumpet-ellipses)")
    p.add_argument("--angles", default="30:150:30",
                   help="projection angles in degrees in [0, 180): FIRST:LAST:COUNT (evenly spaced, ends included) "
                        "or a comma-separated list (default: 30:150:30)")
    p.add_argument("--snr", type=float, default=30.0, help="SNR in dB (> 0) of the simulated noise (default: 30)")
    p.add_argument("--sampler", choices=("svi", "langevin", "pl-mcmc"), default="svi",
                   help="posterior sampler (default: svi; langevin is MALA)")
    p.add_argument("--n-samples", type=int, default=64,
                   help="posterior samples per measurement; a level l needs at least (1+l)/(1-l) (default: 64)")
    p.add_argument("--eval-phantoms", type=int, default=0,
                   help="ellipse test phantoms added to the evaluation set on which coverage is measured "
                        "(default: 0, the phantom only)")
    p.add_argument("--calibrate", default=None, metavar="K|FILE",
                   help="fit a split-conformal calibrator on K ellipse phantoms disjoint from the evaluation set "
                        "(a level l needs K >= l/(1-l): 19 for 95%%), or apply one saved in FILE (calibration.json)")
    p.add_argument("--levels", default="0.5,0.8,0.9,0.95",
                   help="nominal levels of the pixel-wise intervals (default: 0.5,0.8,0.9,0.95)")
    p.add_argument("--window-low", type=float, default=-1000.0,
                   help="Hounsfield units mapped to -1 for a DICOM phantom (default: -1000, air)")
    p.add_argument("--window-high", type=float, default=1000.0,
                   help="Hounsfield units mapped to 1 for a DICOM phantom (default: 1000, dense bone)")
    p.add_argument("--model-error", default=None, metavar="auto|TAU",
                   help="add the prior's model error to the likelihood: noise std sqrt(sigma^2 + TAU^2); auto "
                        "estimates TAU from ||A (x - P(x))|| of 32 training ellipses (default: none)")
    p.add_argument("--residual", choices=("ellipses", "ellipses-pixel", "none"), default="ellipses",
                   help="the prior's off-range error as a Gaussian fitted on 256 training ellipses, added to each "
                        "posterior sample given the measurement (widens the intervals where the truth leaves the "
                        "prior's range): ellipses, its moments per bin of the sample's edge strength; ellipses-pixel, "
                        "per pixel; none: samples stay on the range (default: ellipses)")
    p.add_argument("--map-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the MAP (iflow-l started at the projection of a TV reconstruction; start=latent: at the latent posterior's mode; start_tv=BETA: the TV weight BETA sigma^2), e.g. iterations=100 (repeatable; VALUE read as JSON)")
    p.add_argument("--sampler-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampler option, e.g. steps=500 for svi or step_size=1e-4 for langevin (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of noise and methods (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--out", default="runs/uq-ct", help="output directory (default: runs/uq-ct)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=run)
