"""MAP methods across operators (the analogue of Table 3 of the TRUMPET paper), via `invprob bench`.

    python benchmarks/bench_map.py default    # exactly `invprob bench` with its defaults (timed: its target is <= 2 min)
    python benchmarks/bench_map.py digits     # trumpet-digits, 10 test digits
    python benchmarks/bench_map.py ellipses   # trumpet-ellipses, 10 test ellipse phantoms (64x64)
    python benchmarks/bench_map.py table3     # `invprob bench --preset table3`: trumpet-mnist, 200 MNIST test digits

Runs :func:`invprob.apps.bench.run` (resumable: results in ``runs/bench-<name>``) and copies its tables
into the ``map-<name>`` section of BENCHMARKS.md. ``--prior`` overrides the configuration's prior
(e.g. ``table3 --prior trumpet-digits --n-images 2`` for a quick check of the whole protocol).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import header, write_section  # noqa: E402

from invprob.apps import bench  # noqa: E402

CONFIGS = {
    "default": {},
    "digits": dict(prior="trumpet-digits", dataset="digits", operators="gauss:250,randmask:0.15,sr:4,block:12", n_images=10),
    "ellipses": dict(prior="trumpet-ellipses", dataset="ellipses", operators="gauss:250,randmask:0.15,sr:4,block:12", n_images=10),
    "table3": dict(preset="table3"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", choices=sorted(CONFIGS))
    parser.add_argument("--n-images", type=int, default=None, help="default: 4 (default), 10 (digits, ellipses), 200 (table3)")
    parser.add_argument("--prior", default=None, help="override the configuration's prior")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: as `invprob bench`, one per usable core, at most 4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = dict(CONFIGS[args.config])
    for key in ("n_images", "prior"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    name = args.config if args.prior is None else f"{args.config}-{Path(args.prior).name}"
    out = Path("runs") / f"bench-{name}"
    command = " ".join(["python benchmarks/bench_map.py", *sys.argv[1:]])
    start = time.perf_counter()
    jobs = args.jobs if args.jobs is not None else bench.default_jobs()
    result = bench.run(out, command=command, jobs=jobs, **config)
    minutes = (time.perf_counter() - start) / 60
    tables = (out / "tables.md").read_text()
    body = (
        header(command)
        + f"- wall time of this invocation: {minutes:.1f} min (cells computed earlier in {out} are reused)\n"
        + f"- one image at a time, in {jobs} worker process(es); noise 30 dB SNR (σ from each measurement's RMS)\n\n"
        + tables
    )
    prior = result.config["prior"]
    write_section(f"map-{name}", f"MAP methods across operators: {prior} on {result.config['dataset']}"
                  + (" (the TRUMPETs paper's Table 3 protocol)" if args.config == "table3" else ""), body)
    print(tables)


if __name__ == "__main__":
    main()
