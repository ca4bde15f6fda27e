"""The CT workflow's MAP alone against TV, per phantom: its range estimate and the off-range residual means.

For ellipse phantoms measured as in ``bench_ct_uq.py`` (30 angles in [30°, 150°], 30 dB, the same
seeds: evaluation phantom ``i`` with seed ``i``, calibration phantom ``100 + j`` with ``10000 + j``),
prints per phantom the SNR (dB) of TV (weight 10, the ct-uq baseline's pick), of the workflow's MAP
on the prior's range (``invprob.apps.ct_uq.reconstruction.map_estimate``), of that MAP plus the
conditional mean of the pixel-wise residual (``invprob.uq.GaussianResidual``) and of the
edge-adaptive one (``invprob.uq.EdgeAdaptiveResidual``, the workflow's default), both fitted on 256
training ellipses, and the MAP's seconds; then the means and the median seconds. No SVI samples:
a few minutes instead of the ct-uq protocol's half hour.

Run: ``python benchmarks/bench_ct_map.py --set cal --n 10``; ``--map-opt '{"start": "latent"}'``
gives iFlow-L's own start (the latent posterior's mode), ``'{"iterations": 10}'`` another cap.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invprob import solve, uq  # noqa: E402
from invprob.apps.ct_uq import measure  # noqa: E402
from invprob.apps.ct_uq.reconstruction import map_estimate  # noqa: E402
from invprob.apps.ct_uq.workflow import RESIDUAL_IMAGES  # noqa: E402
from invprob.data import load_dataset  # noqa: E402
from invprob.metrics import snr  # noqa: E402
from invprob.operators.ct import LimitedAngleCT, default_angles  # noqa: E402
from invprob.priors.pretrained import load_prior  # noqa: E402

SNR_DB = 30.0
TV_WEIGHT = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="trumpet-ellipses")
    parser.add_argument("--set", choices=("eval", "cal"), default="eval", help="evaluation (0..) or calibration (100..) phantoms")
    parser.add_argument("--n", type=int, default=20, help="number of phantoms")
    parser.add_argument("--map-opt", default="{}", help="JSON dict of map_options (iFlow-L options, start, start_tv)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prior = load_prior(args.prior)
    options = json.loads(args.map_opt)
    op = LimitedAngleCT(tuple(prior.data_shape), default_angles())
    test = load_dataset("ellipses", split="test", size=prior.data_shape[-1])
    train_set = load_dataset("ellipses", split="train", size=prior.data_shape[-1])
    train = torch.stack([train_set[i] for i in range(RESIDUAL_IMAGES)])
    pixel, edge = uq.GaussianResidual.fit(prior, train), uq.EdgeAdaptiveResidual.fit(prior, train)
    rows = []
    print("phantom | TV | MAP range | +pixel residual | +edge residual | s MAP", flush=True)
    for j in range(args.n):
        index, seed = (j, j) if args.set == "eval" else (100 + j, 10_000 + j)
        truth = test[index].to(prior.dtype)
        y, sigma = measure(op, truth, SNR_DB, torch.Generator().manual_seed(seed))
        x_map, seconds = map_estimate(op, prior, y[None], sigma, options, torch.Generator().manual_seed(1000 + seed))
        x_tv = solve(op, None, y[None], "tv", lam=TV_WEIGHT).x_hat
        estimates = [x_tv, x_map[None], pixel.condition_mean(op, x_map[None], y, sigma),
                     edge.condition_mean(op, x_map[None], y, sigma)]
        rows.append([float(snr(truth[None], x)[0]) for x in estimates] + [seconds])
        print(index, " | ".join(f"{v:.2f}" for v in rows[-1]), flush=True)
    means = [statistics.fmean(column) for column in zip(*rows)]
    print(f"{args.prior}, {args.set} phantoms, n={args.n}, map_options {options}, {torch.get_num_threads()} thread(s): "
          f"TV {means[0]:.2f}, MAP range {means[1]:.2f}, +pixel residual {means[2]:.2f}, +edge residual {means[3]:.2f} dB; "
          f"median {statistics.median(r[4] for r in rows):.2f} s per MAP")


if __name__ == "__main__":
    main()
