"""iFlow-L seconds with 1 and 2 torch threads, one image and a batch of 4 (the README's thread advice).

    python benchmarks/bench_threads.py

``trumpet-digits``, RandomGaussian m = 250, 30 dB, 100 iterations with the stopping rule off, one
untimed warm-up, then the thread counts interleaved ``--repeats`` times; medians. Writes the
``threads`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import header, write_section  # noqa: E402

import invprob  # noqa: E402
from invprob.operators import RandomGaussian, add_noise  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    prior = invprob.load_prior("trumpet-digits")
    data = invprob.load_dataset("digits", split="test")
    op = RandomGaussian(prior.data_shape, 250, seed=0)
    rows = []
    for batch in (1, 4):
        x = torch.stack([data[i] for i in range(batch)])
        y, sigma = add_noise(op(x), snr_db=30, generator=torch.Generator().manual_seed(0))

        def run() -> float:
            start = time.perf_counter()
            invprob.solve(op, prior, y, "iflow-l", sigma=sigma, iterations=100, tol=0.0, progress=False)
            return time.perf_counter() - start

        run()
        seconds: dict[int, list[float]] = {t: [] for t in counts}
        for _ in range(args.repeats):
            for t in counts:
                torch.set_num_threads(t)
                seconds[t].append(run())
        medians = {t: statistics.median(v) for t, v in seconds.items()}
        rows.append(f"| {batch} | " + " | ".join(f"{medians[t]:.2f}" for t in counts)
                    + f" | {medians[counts[-1]] / medians[counts[0]]:.2f} |")
        print(rows[-1], flush=True)
    body = header() + (
        f"- load average {os.getloadavg()[0]:.1f}; trumpet-digits, gauss:250, 30 dB, iFlow-L 100 iterations (tol=0), "
        f"medians of {args.repeats} interleaved runs\n\n"
        f"| batch | " + " | ".join(f"{t} thread(s), s" for t in counts) + f" | {counts[-1]} / {counts[0]} |\n"
        + "|---" * (len(counts) + 2) + "|\n" + "\n".join(rows)
    )
    print(body)
    write_section("threads", "Threads: iFlow-L with 1 and 2 torch threads", body)


if __name__ == "__main__":
    main()
