"""Benchmark LimitedAngleCT back-ends against scikit-image (and astra when importable).

Forward + adjoint of a batch of 16 float32 images, 30 angles in [30°, 150°], at 64² and 128²:
the median wall time of repeated runs per back-end (back-ends of similar speed timed in turn, so
they share the machine's load), its ratio to scikit-image's ``radon`` +
``iradon(filter_name=None)`` (per image, float64, scikit-image's only option) and to astra's
matrix, the adjoint mismatch in float64, the system-matrix build time and its memory.
Writes the ``ct`` section of ``benchmarks/BENCHMARKS.md``.

Run: ``python benchmarks/bench_ct.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import header, write_section  # noqa: E402

from invprob.operators import LimitedAngleCT, check_adjoint  # noqa: E402
from invprob.operators import radon as ct_radon  # noqa: E402

BATCH = 16
SIZES = (64, 128)
FAST_REPEATS = 200
SLOW_REPEATS = 5


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median wall time (ms) of each function, calling them in turn so they share the same load."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def astra_available() -> bool:
    try:
        ct_radon.import_astra()
    except ImportError:
        return False
    return True


def operator_run(n: int, backend: str, x: torch.Tensor) -> tuple[Callable[[], object], float]:
    """(forward + adjoint on ``x``, float64 adjoint mismatch) of one back-end."""
    op = LimitedAngleCT((1, n, n), backend=backend)
    return (lambda: op.adjoint(op(x))), check_adjoint(op, n_trials=3).relative_error


def skimage_run(n: int, x: torch.Tensor) -> Callable[[], None]:
    from skimage.transform import iradon, radon

    theta = np.linspace(30, 150, 30)
    images = x[:, 0].double().numpy()

    def run() -> None:
        for img in images:
            iradon(radon(img, theta=theta), theta=theta, filter_name=None)

    return run


def astra_fpbp_run(n: int, x: torch.Tensor) -> Callable[[], None]:
    """astra's own CPU forward and back projection (``linear`` projector), image by image."""
    astra = ct_radon.import_astra()
    vol, proj = LimitedAngleCT((1, n, n)).geometry.astra_geometries()
    projector = astra.create_projector("linear", proj, vol)
    images = x[:, 0].numpy()

    def run() -> None:
        for img in images:
            sid, sino = astra.create_sino(img, projector)
            bid, _ = astra.create_backprojection(sino, projector)
            astra.data2d.delete([sid, bid])

    return run


def build_case(n: int) -> tuple[float, int, float]:
    """(build ms, nnz, MiB of A and A^T as float64 CSR) for the default 30-angle geometry."""
    geom = LimitedAngleCT((1, n, n), backend="grid").geometry
    ct_radon.cache.forget(geom)
    start = time.perf_counter()
    a, at = ct_radon.system_matrix(geom)
    ms = 1e3 * (time.perf_counter() - start)
    size = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in (a, at))
    return ms, a.nnz, size / 2**20


def main() -> None:
    torch.set_num_threads(2)
    with_astra = astra_available()
    rows = []
    builds = []
    for n in SIZES:
        x = torch.rand((BATCH, 1, n, n), generator=torch.Generator().manual_seed(0))
        builds.append((n, *build_case(n)))
        fast, errors = {}, {}
        for backend in ("matrix", "astra") if with_astra else ("matrix",):
            fast[backend], errors[backend] = operator_run(n, backend, x)
        slow = {}
        slow["grid"], errors["grid"] = operator_run(n, "grid", x)
        if with_astra:
            slow["astra FP/BP per image"] = astra_fpbp_run(n, x)
        slow["scikit-image"] = skimage_run(n, x)
        times = {**interleaved_ms(fast, FAST_REPEATS), **interleaved_ms(slow, SLOW_REPEATS, warmup=1)}
        sk_ms, astra_ms = times["scikit-image"], times.get("astra", float("nan"))
        for name, ms in times.items():
            rows.append((n, name, ms, sk_ms / ms, ms / astra_ms, errors.get(name, float("nan"))))
        print(f"{n}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in times.items()), flush=True)

    lines = [
        "Forward + adjoint, batch 16 (float32; scikit-image float64 per image), 30 angles in "
        "[30°, 150°], detectors = N. `adjoint err` is `check_adjoint`'s relative mismatch in "
        "float64 (scikit-image's unfiltered `iradon` is a scaled, approximate adjoint and is not "
        "scored). astra: " + ("astra-toolbox " + _astra_version() + ", CPU." if with_astra else "not importable here."),
        "",
        "| N | back-end | ms | speed-up vs scikit-image | time / astra matrix | adjoint err |",
        "|---|---|---|---|---|---|",
    ]
    for n, name, ms, speedup, vs_astra, err in rows:
        lines.append(f"| {n} | {name} | {ms:.2f} | {speedup:.1f}x | {_fmt(vs_astra, '{:.2f}')} | {_fmt(err, '{:.1e}')} |")
    lines += ["", "System matrix (`\"matrix\"` back-end, built in numpy, float64 CSR, A and A^T):", ""]
    lines += ["| N | build ms | nnz(A) | memory MiB |", "|---|---|---|---|"]
    lines += [f"| {n} | {ms:.0f} | {nnz:,} | {mib:.1f} |" for n, ms, nnz, mib in builds]
    write_section("ct", "Limited-angle CT operator", header() + "\n" + "\n".join(lines))


def _astra_version() -> str:
    return str(ct_radon.import_astra().__version__)


def _fmt(value: float, spec: str) -> str:
    return "–" if value != value else spec.format(value)


if __name__ == "__main__":
    main()
