"""MAP methods across operators (the analogue of Table 3 of the TRUMPET paper), via `invprob bench`.

    python benchmarks/bench_map.py digits     # trumpet-digits, 10 test digits (the default `invprob bench`)
    python benchmarks/bench_map.py ellipses   # trumpet-ellipses, 10 test ellipse phantoms (64x64)

Runs :func:`invprob.apps.bench.run` (resumable: results in ``runs/bench-<name>``) and copies its tables
into the ``map-<name>`` section of BENCHMARKS.md.
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
    "digits": dict(prior="trumpet-digits", dataset="digits", operators="gauss:250,randmask:0.15,sr:4,block:12"),
    "ellipses": dict(prior="trumpet-ellipses", dataset="ellipses", operators="gauss:250,randmask:0.15,sr:4,block:12"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", choices=sorted(CONFIGS))
    parser.add_argument("--n-images", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = CONFIGS[args.config]
    out = Path("runs") / f"bench-{args.config}"
    command = f"python benchmarks/bench_map.py {args.config} --n-images {args.n_images} --threads {args.threads}"
    start = time.perf_counter()
    bench.run(out, n_images=args.n_images, command=command, **config)
    minutes = (time.perf_counter() - start) / 60
    tables = (out / "tables.md").read_text()
    body = (
        header(command)
        + f"- wall time of this invocation: {minutes:.1f} min (cells computed earlier in {out} are reused)\n"
        + "- methods at their default options; noise 30 dB SNR; one image at a time\n\n"
        + tables
    )
    write_section(f"map-{args.config}", f"MAP methods across operators: {config['prior']} on {args.config}", body)
    print(tables)


if __name__ == "__main__":
    main()
