"""Limited-angle CT uncertainty on ellipse phantoms: coverage, width, SNR, time, model error, calibration.

Evaluation phantoms: the first ``--n-eval`` ellipse test phantoms (indices 0, 1, ...); calibration
phantoms: ``--n-cal`` test-stream phantoms from index 100 on (never evaluated). Each is measured
with ``LimitedAngleCT`` (30 angles in ``[30°, 150°]``) at 30 dB SNR; each sampler of
``--samplers`` draws ``--n-samples`` posterior samples (``invprob.apps.ct_uq.reconstruct``, the
workflow's default options unless ``--quick``); the workflow's MAP (iFlow-L from the projection of a TV reconstruction) is
computed on the evaluation phantoms unless ``--no-map``, and TV with its weight tuned on the
calibration phantoms (fixed and noise-scaled weights) unless ``--no-tv``. Recorded, pooled over every pixel of the evaluation phantoms:

- raw coverage of the central credible intervals at 50/80/90/95 % and their mean width;
- calibrated coverage and width: a ``ConformalCalibrator`` fitted on the calibration phantoms
  (levels a set of K phantoms supports: ``l <= K / (K + 1)``);
- SNR of FBP, MAP and posterior mean (means over phantoms), seconds for the MAP and per sample;
- where the error comes from: ``||x - P(x)||`` of the truth (``P`` the prior's projection, the
  part of the truth the prior cannot represent), the error of the mean ``||x - <X>||`` and the
  posterior spread ``sqrt(sum_j Var X_j)``; and the reduced chi-square data misfit of the mean.

Finished (phantom, sampler) reconstructions are cached in ``--out``, keyed by the prior's weights and
the settings, so an interrupted run resumes. Writes the ``ct-uq`` section of ``benchmarks/BENCHMARKS.md`` (unless ``--dry-run``),
``records.json`` and ``reliability.png`` to ``--out``.

Run: ``python benchmarks/bench_ct_uq.py --n-eval 20 --n-cal 10 --samplers svi,langevin``;
``--quick`` checks the script on 2 + 2 phantoms with about 1/10 of the iterations (not a record).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import header, write_section  # noqa: E402
from invprob import uq  # noqa: E402
from invprob.apps.ct_uq import DEFAULT_LEVELS, measure, quality, reconstruct  # noqa: E402
from invprob.apps.ct_uq.figures import reliability_plot  # noqa: E402
from invprob.apps.ct_uq.maps import misfit, range_distance  # noqa: E402
from invprob.apps.ct_uq.outputs import prior_digest  # noqa: E402
from invprob.apps.ct_uq.reconstruction import Reconstruction, model_error_sigma, with_residual  # noqa: E402
from invprob.apps.ct_uq.workflow import MODEL_ERROR_IMAGES, RESIDUAL_IMAGES  # noqa: E402
from invprob.apps.ct_uq.settings import CALIBRATION_OFFSET, MAP_DEFAULTS, resolved_sampler_options  # noqa: E402
from invprob.data import load_dataset  # noqa: E402
from invprob.operators.ct import LimitedAngleCT, default_angles  # noqa: E402
from invprob.priors.pretrained import load_prior  # noqa: E402
from invprob.progress import progress  # noqa: E402

SNR_DB = 30.0
RESIDUAL_SUFFIX = "+residual"
"""Name suffix of a sampler's results with the pixel-wise Gaussian off-range residual added (``residual="ellipses-pixel"``)."""
EDGE_RESIDUAL_SUFFIX = "+edge-residual"
"""Name suffix of a sampler's results with the edge-adaptive off-range residual added (the workflow's default)."""
TV_WEIGHTS = (0.3, 1.0, 3.0, 6.0, 10.0, 15.0, 30.0, 100.0)
"""Fixed TV weights tried on the calibration phantoms."""
TV_SIGMA2_FACTORS = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Factors ``beta`` of the noise-scaled TV weights ``beta sigma^2`` tried on the calibration phantoms (the
family of the MAP's TV start, with the measurement's sigma); the best of both families by mean SNR is applied to the evaluation phantoms."""
TV_TUNING_PHANTOMS = 10
"""How many calibration phantoms (the first ones) tune the TV weight."""


def settings(args: argparse.Namespace) -> tuple[dict, dict[str, dict]]:
    """MAP options and per-sampler options: the workflow's defaults, ``--quick`` (about 1/10 of the
    work), then any ``--sampler-opt SAMPLER:KEY=VALUE``."""
    options: dict[str, dict] = {"svi": {}, "langevin": {}, "pl-mcmc": {}}
    map_options: dict = {}
    if args.quick:
        map_options = {"iterations": 20}
        options = {"svi": {"steps": 100}, "langevin": {"burn_in": 50, "thin": 2}, "pl-mcmc": {"burn_in": 50, "thin": 2}}
    for item in args.sampler_opt:
        sampler, _, pair = item.partition(":")
        key, _, value = pair.partition("=")
        if sampler not in options or not key or not value:
            raise SystemExit(f"--sampler-opt: expected SAMPLER:KEY=VALUE with SAMPLER in {sorted(options)}, got {item!r}")
        options[sampler][key] = json.loads(value)
    return map_options, options


def cached(out: Path, key: str, name: str, prior, compute) -> Reconstruction:
    """The reconstruction ``name`` under the settings ``key``: loaded if an earlier run finished it, else computed."""
    path = out / "cache" / key / f"{name}.npz"
    if path.is_file():
        with np.load(path) as data:
            return Reconstruction.from_arrays({k: data[k] for k in data.files}, prior.device, prior.dtype)
    rec = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **rec.to_arrays())
    tmp.replace(path)
    return rec


def _project(prior, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return prior.project(x[None])[0]


def record(op: LimitedAngleCT, prior, name: str, rec: Reconstruction, truth: torch.Tensor, off_range: float,
           with_map: bool, index: int) -> dict:
    """The per-phantom numbers of one evaluation reconstruction."""
    scores = quality(rec)
    return {
        "image": index, "sampler": name, "snr": {k: v["snr_db"] for k, v in scores.items()},
        "seconds_map": rec.seconds_map if with_map else None,
        "seconds_per_sample": rec.seconds_sampler / rec.samples.shape[0],
        "coverage": uq.coverage(rec.samples, truth, DEFAULT_LEVELS).tolist(),
        "wedge_energy_ratio": float(uq.wedge_energy_ratio(rec.samples, op.angles)),
        "off_range": off_range, "error_of_mean": float((truth - rec.mean).norm()),
        "spread": float(rec.samples.var(0).sum().sqrt()),
        "range_distance_of_mean": range_distance(prior, rec.mean),
        "misfit_reduced": uq.residual_chi2(op, rec.mean, rec.y, rec.sigma).reduced,
    }


def run(args: argparse.Namespace) -> dict:
    """Reconstruct every phantom with every sampler; return per-sampler pooled results and per-phantom records."""
    prior = load_prior(args.prior)
    shape = tuple(prior.data_shape)
    op = LimitedAngleCT(shape, default_angles())
    images = load_dataset("ellipses", split="test", size=shape[-1])
    map_options, sampler_options = settings(args)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    out = Path(args.out)
    def training_images(n: int) -> torch.Tensor:
        train = load_dataset("ellipses", split="train", size=shape[-1])
        return torch.stack([train[i] for i in range(n)])

    tau = model_error_sigma(op, prior, training_images(MODEL_ERROR_IMAGES)) if args.model_error else None
    residuals = {}
    if not args.no_residual:
        train = training_images(RESIDUAL_IMAGES)
        residuals = {RESIDUAL_SUFFIX: uq.GaussianResidual.fit(prior, train),
                     EDGE_RESIDUAL_SUFFIX: uq.EdgeAdaptiveResidual.fit(prior, train)}
    variants = samplers + [f"{s}{suffix}" for suffix in residuals for s in samplers]
    resolved = {s: resolved_sampler_options(s, args.n_samples, opts) for s, opts in sampler_options.items()}
    parts = [prior_digest(prior), args.n_samples, map_options, resolved, MAP_DEFAULTS] + ([tau] if tau is not None else [])
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    evals = [("eval", i, i) for i in range(args.n_eval)]
    cals = [("cal", CALIBRATION_OFFSET + j, 10_000 + j) for j in range(args.n_cal)]
    sets = [item for pair in zip(evals, cals) for item in pair] + evals[len(cals):] + cals[len(evals):]  # interleaved
    recs: dict[tuple[str, str], list[Reconstruction]] = {(s, kind): [] for s in variants for kind in ("eval", "cal")}
    records = []
    with progress(len(sets) * len(samplers), "bench-ct-uq") as bar:
        for kind, index, seed in sets:
            truth = images[index].to(dtype=prior.dtype)
            y, sigma = measure(op, truth, SNR_DB, torch.Generator().manual_seed(seed))
            off_range = None if kind != "eval" else float((truth - _project(prior, truth)).norm())
            for k, sampler in enumerate(samplers):
                with_map = kind == "eval" and k == 0 and not args.no_map

                def compute(sampler=sampler, with_map=with_map, truth=truth, y=y, sigma=sigma, seed=seed):
                    return reconstruct(op, prior, y, sigma, truth=truth, sampler=sampler, n_samples=args.n_samples,
                                       map_options=map_options, sampler_options=sampler_options[sampler],
                                       with_map=with_map, model_error=tau,
                                       generator=torch.Generator().manual_seed(1000 + seed))

                rec = cached(out, key, f"{kind}-{index:03d}-{sampler}-{'map' if with_map else 'nomap'}", prior, compute)
                entries = [(sampler, rec)]
                for suffix, residual in residuals.items():
                    entries.append((f"{sampler}{suffix}", with_residual(
                        op, residual, rec, torch.Generator().manual_seed(2000 + seed))))
                bar.update(stage=f"{kind} {index} {sampler}")
                for name, rec in entries:
                    recs[(name, kind)].append(rec)
                    if kind == "eval":
                        records.append(record(op, prior, name, rec, truth, off_range, with_map, index))
    pooled = {}
    for sampler in variants:
        ev, cal = recs[(sampler, "eval")], recs[(sampler, "cal")]
        samples, truths = torch.stack([r.samples for r in ev]), torch.stack([r.truth for r in ev])
        entry = {
            "raw": uq.coverage(samples, truths, DEFAULT_LEVELS, dim=1).tolist(),
            "raw_width": uq.interval_width(samples, DEFAULT_LEVELS, dim=1).tolist(),
            "calibrated": None, "calibrated_width": None, "cal_levels": None,
        }
        levels = [lv for lv in DEFAULT_LEVELS if cal and uq.min_calibration_phantoms(lv) <= len(cal)]
        if levels:
            calibrator = uq.ConformalCalibrator.fit(torch.stack([r.samples for r in cal]),
                                                    torch.stack([r.truth for r in cal]), levels,
                                                    misfit=[misfit(op, r).reduced for r in cal])
            calibrator.save(out / f"calibration-{sampler}.json")
            entry.update(calibrated=calibrator.coverage(samples, truths, dim=1).tolist(),
                         calibrated_width=calibrator.width(samples, dim=1).tolist(), cal_levels=levels,
                         scales=list(calibrator.scales))
        pooled[sampler] = entry
    first = samplers[0]
    tv = tv_baseline(op, recs[(first, "cal")][:TV_TUNING_PHANTOMS], recs[(first, "eval")]) if not args.no_tv else None
    return {"pooled": pooled, "records": records, "model_error_sigma": tau, "tv": tv,
            "residual_rms": residuals[RESIDUAL_SUFFIX].rms if residuals else None,
            "sigma_mean": statistics.fmean(r.sigma for r in recs[(samplers[0], "eval")])}


def tv_baseline(op: LimitedAngleCT, tuning: list[Reconstruction], evaluation: list[Reconstruction]) -> dict:
    """TV-regularised least squares: of the fixed weights :data:`TV_WEIGHTS` and the noise-scaled
    ``beta sigma^2`` of :data:`TV_SIGMA2_FACTORS`, the one with the best mean SNR on the ``tuning``
    phantoms (calibration ones), then the SNR and seconds per phantom on ``evaluation``."""
    from invprob.metrics import snr
    from invprob.solvers import solve

    def run_tv(recs: list[Reconstruction], weight: tuple[str, float]) -> tuple[float, float]:
        kind, value = weight
        snrs, seconds = [], 0.0
        for r in recs:
            result = solve(op, None, r.y[None], "tv", lam=value * r.sigma**2 if kind == "sigma2" else value, progress=False)
            snrs.append(float(snr(r.truth[None], result.x_hat)[0]))
            seconds += result.seconds
        return statistics.fmean(snrs), seconds / len(recs)

    if not tuning:
        raise SystemExit("tv: tuning the TV weight needs calibration phantoms (--n-cal >= 1), or pass --no-tv")
    weights = [("fixed", w) for w in TV_WEIGHTS] + [("sigma2", b) for b in TV_SIGMA2_FACTORS]
    tuned = {weight: run_tv(tuning, weight)[0] for weight in weights}
    best = max(tuned, key=tuned.get)
    value, seconds = run_tv(evaluation, best)
    return {"lam": _weight_name(best), "tuning_snr": {_weight_name(w): v for w, v in tuned.items()},
            "n_tuning": len(tuning), "snr": value, "seconds": seconds}


def _weight_name(weight: tuple[str, float]) -> str:
    kind, value = weight
    return f"{value:g}σ²" if kind == "sigma2" else f"{value:g}"


def section(args: argparse.Namespace, results: dict, wall: float) -> str:
    """The markdown of the ``ct-uq`` section."""
    records, pooled = results["records"], results["pooled"]

    def mean(sampler: str, pick) -> float:
        values = [pick(r) for r in records if r["sampler"] == sampler and pick(r) is not None]
        return statistics.fmean(values) if values else math.nan

    def cells(values, levels=DEFAULT_LEVELS, fmt="{:.3f}") -> str:
        by = dict(zip(levels, values or []))
        return " | ".join("—" if lv not in by else fmt.format(by[lv]) for lv in DEFAULT_LEVELS)

    lv = " | ".join(f"{level:.0%}" for level in DEFAULT_LEVELS)
    lines = [
        header(),
        f"- torch threads: {torch.get_num_threads()}; wall time {wall / 60:.1f} min (cached reconstructions reused)",
        f"- prior: `{args.prior}`; evaluation: ellipse test phantoms 0-{args.n_eval - 1}; calibration: "
        f"{args.n_cal} test-stream phantoms from index {CALIBRATION_OFFSET} (disjoint); LimitedAngleCT, 30 angles "
        f"in [30°, 150°], {SNR_DB:g} dB; {args.n_samples} posterior samples per phantom"
        f"{'; QUICK settings (not a record)' if args.quick else ''}; sampler options: "
        f"{settings(args)[1]} (empty: the workflow's defaults)"
        + (f"; likelihood noise std sqrt(σ² + τ²) with the model error τ = {results['model_error_sigma']:.3g} "
           f"(mean σ = {results['sigma_mean']:.3g})" if results["model_error_sigma"] is not None else ""),
        *([f"- rows `SAMPLER{RESIDUAL_SUFFIX}`: the same posterior samples plus the Gaussian off-range residual "
           f"(`invprob.uq.GaussianResidual`, pixel-wise mean and variance of x − P(x) on {RESIDUAL_IMAGES} training "
           f"ellipses, RMS {results['residual_rms']:.4f}) drawn given each sample and the sinogram; its MAP is the "
           f"plain row's MAP plus the residual's conditional mean (`--residual ellipses-pixel`); rows "
           f"`SAMPLER{EDGE_RESIDUAL_SUFFIX}`: the same with `invprob.uq.EdgeAdaptiveResidual` (mean and variance "
           "per bin of the edge strength |∇v| of the range sample; the workflow's default)"]
          if results.get("residual_rms") is not None else []),
        "- coverage: fraction of all evaluation pixels inside their interval (nominal = the level); width: mean "
        "interval width in image units ([-1, 1] range); calibrated: split-conformal scales fitted on the calibration "
        "phantoms (— where K calibration phantoms cannot support the level, l > K/(K+1))",
        "",
        f"| sampler | intervals | coverage {lv} | width {lv} |",
        "|---|---|" + "---|" * (2 * len(DEFAULT_LEVELS)),
    ]
    for sampler, entry in pooled.items():
        lines.append(f"| {sampler} | raw | {cells(entry['raw'])} | {cells(entry['raw_width'], fmt='{:.3f}')} |")
        if entry["calibrated"] is not None:
            lines.append(f"| {sampler} | calibrated | {cells(entry['calibrated'], entry['cal_levels'])} | "
                         f"{cells(entry['calibrated_width'], entry['cal_levels'])} |")
    lines += [
        "",
        "| sampler | SNR FBP | SNR MAP | SNR mean | s MAP | s / sample | wedge ratio | ‖x − P(x)‖ | ‖x − mean‖ | "
        "spread | off-range share | χ²/m of mean |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sampler in pooled:
        off = mean(sampler, lambda r: r["off_range"])
        err = mean(sampler, lambda r: r["error_of_mean"])
        spread = mean(sampler, lambda r: r["spread"])
        share = mean(sampler, lambda r: (r["off_range"] / r["error_of_mean"]) ** 2)
        lines.append(
            f"| {sampler} | {mean(sampler, lambda r: r['snr'].get('fbp')):.2f} | "
            f"{mean(sampler, lambda r: r['snr'].get('map')):.2f} | {mean(sampler, lambda r: r['snr']['mean']):.2f} | "
            f"{mean(sampler, lambda r: r['seconds_map']):.1f} | {mean(sampler, lambda r: r['seconds_per_sample']):.3f} | "
            f"{mean(sampler, lambda r: r['wedge_energy_ratio']):.2f} | {off:.2f} | {err:.2f} | {spread:.2f} | "
            f"{share:.2f} | {mean(sampler, lambda r: r['misfit_reduced']):.2f} |"
        )
    lines += [
        "",
        "- ‖x − P(x)‖: distance of the truth from the prior's range (what no posterior on the range can represent); "
        "‖x − mean‖: error of the posterior mean; spread: sqrt(Σ_j Var X_j), the error a calibrated posterior "
        "expects; off-range share: mean of (‖x − P(x)‖ / ‖x − mean‖)², the part of the squared error off the range; "
        "χ²/m: ‖y − A mean‖² / (σ² m), 1 for a mean that fits the data to the noise level (in rows with a residual the "
        "mean includes the residual; the workflow's reach check uses the range samples' mean, the plain rows' value).",
    ]
    tv = results.get("tv")
    if tv:
        lines.append(f"- TV baseline (FISTA, weight {tv['lam']} of the fixed {list(TV_WEIGHTS)} and the noise-scaled "
                     f"{[f'{b:g}σ²' for b in TV_SIGMA2_FACTORS]}, chosen by the mean SNR on the "
                     f"first {tv['n_tuning']} calibration phantoms): SNR {tv['snr']:.2f} dB on the evaluation phantoms, "
                     f"{tv['seconds']:.2f} s per phantom.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", default="trumpet-ellipses", help="shipped prior name or checkpoint directory")
    parser.add_argument("--n-eval", type=int, default=20, help="evaluation phantoms (default: 20)")
    parser.add_argument("--n-cal", type=int, default=10, help="calibration phantoms (default: 10)")
    parser.add_argument("--samplers", default="svi,langevin", help="comma-separated: svi, langevin, pl-mcmc")
    parser.add_argument("--n-samples", type=int, default=64, help="posterior samples per phantom (>= 39 for 95 %%)")
    parser.add_argument("--no-map", action="store_true", help="skip the MAP")
    parser.add_argument("--no-tv", action="store_true", help="skip the TV baseline (its weight is tuned on the calibration phantoms)")
    parser.add_argument("--model-error", action="store_true",
                        help="add the model-error std estimated from 32 training ellipses to the likelihood")
    parser.add_argument("--no-residual", action="store_true",
                        help="skip the rows with the off-range residuals fitted on 256 training ellipses")
    parser.add_argument("--section", default="ct-uq", help="BENCHMARKS.md section to write (default: ct-uq)")
    parser.add_argument("--sampler-opt", action="append", default=[], metavar="SAMPLER:KEY=VALUE",
                        help="a sampler option, e.g. svi:steps=200 or langevin:burn_in=200 (repeatable)")
    parser.add_argument("--out", default="runs/bench-ct-uq", help="cache, records.json and reliability.png")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--quick", action="store_true", help="2 + 2 phantoms, ~1/10 of the iterations: a check")
    parser.add_argument("--dry-run", action="store_true", help="print the section instead of writing BENCHMARKS.md")
    args = parser.parse_args()
    if args.quick:
        args.n_eval, args.n_cal = min(args.n_eval, 2), min(args.n_cal, 2)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.json").write_text(json.dumps(results, indent=2) + "\n")
    curves = {}
    for sampler, entry in results["pooled"].items():
        curves[f"{sampler}, raw"] = entry["raw"]
        if entry["calibrated"] is not None:
            by = dict(zip(entry["cal_levels"], entry["calibrated"]))
            curves[f"{sampler}, calibrated (K = {args.n_cal})"] = [by.get(lv, math.nan) for lv in DEFAULT_LEVELS]
    reliability_plot(DEFAULT_LEVELS, curves, out / "reliability.png",
                     title=f"CT, {args.n_eval} held-out ellipse phantoms, 30 angles in [30°, 150°]")
    body = section(args, results, time.perf_counter() - start)
    if args.dry_run:
        print(body)
    else:
        title = "Limited-angle CT uncertainty (ellipse phantoms)" + (", model error in the likelihood"
                                                                      if args.model_error else "")
        write_section(args.section, title, body)
        print(f"wrote the {args.section} section of {Path(__file__).with_name('BENCHMARKS.md')}")


if __name__ == "__main__":
    main()
