"""Per-call cost of dense operators on float32 input: a recast of the float64 matrix every call
(the behaviour before ``Operator.cast_buffer``) against the cached cast copy.

``from_matrix`` of a 1024 x 1024 float64 matrix, float32 batches of 1 and 10 images (1 x 32 x 32),
forward and adjoint; median of interleaved repeats on one thread. Writes the ``operators-cast``
section of ``benchmarks/BENCHMARKS.md``.

Run: ``python benchmarks/bench_operators.py`` (about 15 seconds).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ct import interleaved_ms  # noqa: E402
from record import header, write_section  # noqa: E402

from invprob.operators import from_matrix  # noqa: E402

N = 1024
REPEATS = 300


def main() -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    op = from_matrix(torch.randn(N, N, generator=gen, dtype=torch.float64), (1, 32, 32))
    rows = []
    with torch.no_grad():
        for batch in (1, 10):
            x = torch.randn(batch, 1, 32, 32, generator=gen)
            y = torch.randn(batch, N, generator=gen)
            fns = {
                "forward, recast each call": lambda: x.flatten(1) @ op.matrix.to(x).T,
                "forward, cached cast": lambda: op(x),
                "adjoint, recast each call": lambda: (y @ op.matrix.to(y)).reshape(batch, 1, 32, 32),
                "adjoint, cached cast": lambda: op.adjoint(y),
            }
            torch.testing.assert_close(fns["forward, recast each call"](), op(x))
            times = interleaved_ms(fns, REPEATS, warmup=5)
            for name, ms in times.items():
                rows.append((batch, name, ms))
            print(f"batch {batch}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in times.items()), flush=True)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        f"`from_matrix` of a {N} x {N} float64 matrix applied to float32 images (1 x 32 x 32); median of "
        f"{REPEATS} interleaved repeats, 1 thread, load average during the run {load} (other jobs share the "
        "machine). \"recast each call\" is what `matrix.to(x)` in every call cost before the cast copy was "
        "kept (`Operator.cast_buffer`).",
        "",
        "| batch | call | ms, recast each call | ms, cached cast | saved per call |",
        "|---|---|---|---|---|",
    ]
    table = {(b, name): ms for b, name, ms in rows}
    for b in (1, 10):
        for call in ("forward", "adjoint"):
            old, new = table[(b, f"{call}, recast each call")], table[(b, f"{call}, cached cast")]
            lines.append(f"| {b} | {call} | {old:.3f} | {new:.3f} | {old - new:.3f} ms ({old / new:.2f}x) |")
    write_section("operators-cast", "Dense operators: cast of the float64 matrix kept per dtype", header() + "\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
