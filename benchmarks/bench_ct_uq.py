"""Limited-angle CT uncertainty on ellipse test phantoms: quality, Fourier uncertainty, calibration, time.

For each of the first ``--n-images`` (20) ellipse test phantoms, measured with ``LimitedAngleCT``
(30 angles in ``[30°, 150°]``) at 30 dB SNR, the script reconstructs by FBP and iFlow-L (MAP, the
known sigma and ``lam = 1``) and draws ``--n-samples`` posterior samples with each sampler of
``--samplers`` (``invprob.apps.ct_uq.reconstruct``). It records, averaged over the phantoms, the SNR of
FBP / MAP / posterior mean, the wedge energy ratio (Fourier deviation energy per frequency inside
the missing wedge over outside, ``invprob.uq.wedge_energy_ratio``), and, pooled over every pixel
of every phantom, the empirical coverage of the pixel-wise central credible intervals at 50 / 80 /
90 / 95 % (``invprob.uq.coverage``); seconds for the MAP and per posterior sample
(``Result.seconds / S``, SVI's fit included). Writes the ``ct-uq`` section of
``benchmarks/BENCHMARKS.md``, and per-phantom records (JSON) and a reliability plot to ``--out``.

Run: ``python benchmarks/bench_ct_uq.py`` (needs the shipped ``trumpet-ellipses``, or
``--prior PATH`` to a checkpoint of 1 x N x N images). ``--quick`` checks the script on 3 phantoms
with about 1/10 of the iterations (not for the record). ``--dry-run`` prints the section instead
of writing it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import header, write_section  # noqa: E402
from invprob import uq  # noqa: E402
from invprob.data import load_dataset  # noqa: E402
from invprob.operators.ct import LimitedAngleCT, default_angles  # noqa: E402
from invprob.plots import reliability_plot  # noqa: E402
from invprob.priors.pretrained import load_prior  # noqa: E402
from invprob.apps.ct_uq import DEFAULT_LEVELS, measure, quality, reconstruct  # noqa: E402

SNR_DB = 30.0


def settings(quick: bool) -> tuple[dict, dict[str, dict]]:
    """iFlow-L options and per-sampler options (the workflow's defaults; ``quick``: about 1/10 of the work)."""
    if not quick:
        return {}, {"svi": {}, "langevin": {}}
    return {"iterations": 100}, {"svi": {"steps": 100}, "langevin": {"burn_in": 50, "thin": 2}}


def run(args: argparse.Namespace) -> tuple[dict, list[dict]]:
    """Reconstruct every phantom with every sampler; return the summary and the per-phantom records."""
    prior = load_prior(args.prior)
    shape = tuple(prior.data_shape)
    op = LimitedAngleCT(shape, default_angles())
    images = load_dataset("ellipses", split="test", size=shape[-1])
    map_options, sampler_options = settings(args.quick)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    records, samples, truths = [], {s: [] for s in samplers}, []
    for index in range(args.n_images):
        truth = images[index].to(dtype=prior.dtype)
        y, sigma = measure(op, truth, SNR_DB, torch.Generator().manual_seed(index))
        truths.append(truth)
        for k, sampler in enumerate(samplers):
            rec = reconstruct(op, prior, y, sigma, truth=truth, sampler=sampler, n_samples=args.n_samples,
                              map_options=map_options, sampler_options=sampler_options[sampler], with_map=k == 0,
                              generator=torch.Generator().manual_seed(1000 + index))
            scores = quality(rec)
            if k == 0:
                map_record = {"fbp": scores["fbp"], "map": scores["map"], "seconds_map": rec.seconds_map}
            samples[sampler].append(rec.samples)
            records.append({
                "image": index, "sampler": sampler, **map_record, "mean": scores["mean"],
                "wedge_energy_ratio": float(uq.wedge_energy_ratio(rec.samples, op.angles)),
                "coverage": uq.coverage(rec.samples, truth, DEFAULT_LEVELS).tolist(),
                "seconds_per_sample": rec.seconds_sampler / rec.samples.shape[0],
            })
            print(f"phantom {index} {sampler}: mean SNR {records[-1]['mean']['snr_db']:.2f} dB", file=sys.stderr)
    truth_stack = torch.stack(truths)
    summary = {s: uq.coverage(torch.stack(samples[s]), truth_stack, DEFAULT_LEVELS, dim=1).tolist() for s in samplers}
    return summary, records


def section(args: argparse.Namespace, coverage: dict[str, list[float]], records: list[dict]) -> str:
    """The markdown of the ``ct-uq`` section."""
    def mean(sampler: str, pick) -> float:
        return statistics.fmean(pick(r) for r in records if r["sampler"] == sampler)

    levels = " | ".join(f"cov {level:.0%}" for level in DEFAULT_LEVELS)
    lines = [
        header(),
        f"- prior: `{args.prior}`; {args.n_images} ellipse test phantoms; LimitedAngleCT, 30 angles in [30°, 150°], "
        f"{SNR_DB:g} dB; {args.n_samples} posterior samples per phantom{'; QUICK settings' if args.quick else ''}",
        "- SNR in dB, means over phantoms; wedge ratio: Fourier deviation energy per frequency inside the missing "
        "wedge / outside (1 = isotropic); coverage: fraction of all pixels inside their central credible interval "
        "(calibrated = the nominal level)",
        "",
        f"| sampler | SNR FBP | SNR MAP | SNR mean | wedge ratio | {levels} | s MAP | s / sample |",
        "|---|---|---|---|---|" + "---|" * len(DEFAULT_LEVELS) + "---|---|",
    ]
    for sampler, cov in coverage.items():
        cells = [
            mean(sampler, lambda r: r["fbp"]["snr_db"]), mean(sampler, lambda r: r["map"]["snr_db"]),
            mean(sampler, lambda r: r["mean"]["snr_db"]), mean(sampler, lambda r: r["wedge_energy_ratio"]),
        ]
        seconds = [mean(sampler, lambda r: r["seconds_map"]), mean(sampler, lambda r: r["seconds_per_sample"])]
        lines.append(
            f"| {sampler} | " + " | ".join(f"{c:.2f}" for c in cells) + " | "
            + " | ".join(f"{c:.3f}" for c in cov) + f" | {seconds[0]:.1f} | {seconds[1]:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", default="trumpet-ellipses", help="shipped prior name or checkpoint directory")
    parser.add_argument("--n-images", type=int, default=20, help="ellipse test phantoms (default: 20)")
    parser.add_argument("--samplers", default="svi", help="comma-separated: svi, langevin (default: svi)")
    parser.add_argument("--n-samples", type=int, default=64, help="posterior samples per phantom (>= 39 for 95 %%)")
    parser.add_argument("--out", default="runs/bench-ct-uq", help="folder of records.json and reliability.png")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--quick", action="store_true", help="3 phantoms, ~1/10 of the iterations: a check, not a record")
    parser.add_argument("--dry-run", action="store_true", help="print the section instead of writing BENCHMARKS.md")
    args = parser.parse_args()
    if args.quick:
        args.n_images = min(args.n_images, 3)
    torch.set_num_threads(args.threads)
    coverage, records = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "records.json").write_text(json.dumps({"coverage": coverage, "records": records}, indent=2) + "\n")
    reliability_plot(DEFAULT_LEVELS, coverage, out / "reliability.png",
                     title=f"CT, {args.n_images} ellipse phantoms, 30 angles in [30°, 150°]")
    body = section(args, coverage, records)
    if args.dry_run:
        print(body)
    else:
        write_section("ct-uq", "Limited-angle CT uncertainty (ellipse phantoms)", body)
        print(f"wrote the ct-uq section of {Path(__file__).with_name('BENCHMARKS.md')}")


if __name__ == "__main__":
    main()
