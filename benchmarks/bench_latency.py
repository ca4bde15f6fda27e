"""Per-image latency and batched throughput of every method, beside deepinv's DIP on identical inputs.

    python benchmarks/bench_latency.py                                   # default prior, 3 images, 1 thread
    python benchmarks/bench_latency.py --peer-python $PEER_VENV/bin/python   # + deepinv DIP, same inputs
    python benchmarks/bench_latency.py --quick                           # smoke test (1 image, MAP only)

Problems (the four of the peer comparison): ``gauss:250`` (compressed sensing), ``keep:0.85`` (85 %
of the pixels kept), ``sr:4`` and ``block:12``, on the first test images of the default prior's
dataset, 30 dB noise exactly as ``invprob bench`` draws it. Each method runs with its defaults
(``invprob.solve``; σ given to the methods that take it, as ``invprob bench`` does):

- *single*: each image solved on its own, median seconds per image;
- *batch*: all images as one batch, seconds per image = wall / images.

Profile: seconds of one iFlow-L iteration (the difference of two runs with the stopping rule off,
60 and 10 iterations, over 50) against one ``g†`` + ``g`` pass with the backward to the image and
against the fused ``project_with_log_prob`` with its backward (median of repeats, batch 1; the
weights frozen as inside ``solve``).

With ``--peer-python`` the inputs (images, noisy measurements, each operator as its dense matrix)
are written to an ``.npz`` and ``benchmarks/peer_deepinv_dip.py`` runs deepinv's DIP on them in the
peer venv with the same thread count; the table gives SNRs side by side and the ratio of iFlow-L's
single-image seconds to deepinv DIP's. Results go to the ``latency`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from record import header, write_section  # noqa: E402

import invprob  # noqa: E402
from invprob.apps.bench import DEFAULTS, measure, solve_known_noise  # noqa: E402
from invprob.metrics import snr  # noqa: E402
from invprob.operators import parse_operator  # noqa: E402
from invprob.solvers import list_methods  # noqa: E402
from invprob.solvers.base import frozen  # noqa: E402

PROBLEMS = ["gauss:250", "keep:0.85", "sr:4", "block:12"]
SEED = 0


def build_problems(prior, x: torch.Tensor) -> dict[str, tuple]:
    """``spec -> (operator, y, sigma)`` with bench's noise for each image."""
    problems = {}
    for text in PROBLEMS:
        op = parse_operator(text).build(prior.data_shape, SEED)
        pairs = [measure(op, x[i], text, i, 30.0, SEED) for i in range(len(x))]
        problems[text] = (op, torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))
    return problems


def dense_matrix(op, shape: tuple[int, ...]) -> np.ndarray:
    """The operator's matrix, column ``j`` = ``A(e_j)``."""
    n = int(np.prod(shape))
    eye = torch.eye(n).reshape(n, *shape)
    with torch.no_grad():
        columns = torch.cat([op(eye[i : i + 256]).flatten(1) for i in range(0, n, 256)])
    return columns.T.double().numpy()


def time_method(op, prior, x, y, sigma, method: str, mode: str) -> dict[str, object]:
    """Solve every image on its own (``single``) or as one batch; SNRs and seconds per image."""
    generator = torch.Generator().manual_seed(SEED)
    if mode == "batch":
        start = time.perf_counter()
        x_hat, _ = solve_known_noise(op, prior, y, method, generator, {}, sigma)
        seconds = [(time.perf_counter() - start) / len(y)] * len(y)
    else:
        outputs, seconds = [], []
        for i in range(len(y)):
            start = time.perf_counter()
            out, _ = solve_known_noise(op, prior, y[i : i + 1], method, generator, {}, sigma[i : i + 1])
            seconds.append(time.perf_counter() - start)
            outputs.append(out)
        x_hat = torch.cat(outputs)
    return {"snr": snr(x, x_hat.to(x.dtype)).tolist(), "seconds": seconds}


def profile_iteration(prior, problem: tuple, repeats: int = 15) -> dict[str, float]:
    """Seconds of one iFlow-L iteration vs one prior pass + backward (batch of one)."""
    op, y, sigma = problem
    y1, s1 = y[:1], float(sigma[0])

    def run(iterations: int) -> float:
        start = time.perf_counter()
        invprob.solve(op, prior, y1, "iflow-l", sigma=s1, iterations=iterations, tol=0.0, progress=False)
        return time.perf_counter() - start

    run(2)
    per_iteration = statistics.median((run(60) - run(10)) / 50 for _ in range(3))
    x = op.pinv(y1).detach()

    def pass_seconds(fused: bool) -> float:
        xr = x.clone().requires_grad_(True)
        start = time.perf_counter()
        if fused:
            v, log_p = prior.project_with_log_prob(xr)
            torch.autograd.grad(v.sum() + log_p.sum(), xr)
        else:
            z, _ = prior.g_pinv(xr)
            v, _ = prior.g(z)
            torch.autograd.grad(v.sum(), xr)
        return time.perf_counter() - start

    with frozen(prior):  # as inside solve(): the weights are constants, the gradient is the image's
        plain = statistics.median(pass_seconds(False) for _ in range(repeats))
        fused = statistics.median(pass_seconds(True) for _ in range(repeats))
    return {"iteration": per_iteration, "g_pinv_g_backward": plain, "fused_backward": fused}


def peer_dip(peer_python: str, x: torch.Tensor, problems: dict, threads: int, images: int) -> dict:
    """deepinv DIP on the same images, measurements and operator matrices, in the peer venv."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs, out = Path(tmp) / "inputs.npz", Path(tmp) / "deepinv.json"
        arrays = {"x": x.numpy()}
        for text, (op, y, _) in problems.items():
            arrays[f"{text}__matrix"] = dense_matrix(op, tuple(x.shape[1:]))
            arrays[f"{text}__y"] = y.flatten(1).numpy()
        np.savez(inputs, **arrays)
        script = Path(__file__).with_name("peer_deepinv_dip.py")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([peer_python, str(script), str(inputs), str(out), "--threads", str(threads), "--images", str(images)],
                       check=True, env=env)
        return json.loads(out.read_text())


def mean(values) -> float:
    return statistics.fmean(values)


def tables(results: dict, methods: list[str], peer: dict | None) -> str:
    lines = []
    for mode in ("single", "batch"):
        lines += [f"\n**{mode}: SNR dB (mean) / seconds per image ({'median' if mode == 'single' else 'batch wall / images'})**\n",
                  "| problem | " + " | ".join(methods) + (" | deepinv dip |" if peer and mode == "single" else " |"),
                  "|---" * (len(methods) + 1 + (1 if peer and mode == "single" else 0)) + "|"]
        for text in PROBLEMS:
            cells = []
            for method in methods:
                r = results.get((mode, text, method))
                cells.append("–" if r is None else f"{mean(r['snr']):.2f} / {statistics.median(r['seconds']):.3g}")
            if peer and mode == "single":
                d = peer["problems"][text]
                cells.append(f"{mean(d['snr']):.2f} / {statistics.median(d['seconds']):.3g}")
            lines.append(f"| {text} | " + " | ".join(cells) + " |")
    if peer:
        lines += ["\n**iFlow-L beside deepinv DIP, one image at a time**\n",
                  "| problem | iFlow-L SNR | deepinv DIP SNR | iFlow-L s / DIP s (medians) |", "|---|---|---|---|"]
        for text in PROBLEMS:
            mine, theirs = results[("single", text, "iflow-l")], peer["problems"][text]
            n = len(theirs["snr"])
            ratio = statistics.median(mine["seconds"][:n]) / statistics.median(theirs["seconds"])
            lines.append(f"| {text} | {mean(mine['snr'][:n]):.2f} | {mean(theirs['snr']):.2f} | {ratio:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default=DEFAULTS["prior"])
    parser.add_argument("--dataset", default=DEFAULTS["dataset"])
    parser.add_argument("--n-images", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default=None, help="comma-separated (default: every MAP, baseline and posterior method)")
    parser.add_argument("--peer-python", default=None, help="python of the deepinv peer venv (omit to skip deepinv)")
    parser.add_argument("--peer-images", type=int, default=None, help="images deepinv DIP solves per problem (default: --n-images)")
    parser.add_argument("--quick", action="store_true", help="1 image, MAP methods only, no profile")
    parser.add_argument("--no-record", action="store_true", help="print, do not write BENCHMARKS.md")
    parser.add_argument("--section", default="latency", help="BENCHMARKS.md section (default: latency)")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-iteration profile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_images = 1 if args.quick else args.n_images
    methods = (args.methods.split(",") if args.methods else
               list_methods("map") + list_methods("baseline") + ([] if args.quick else list_methods("posterior")))
    prior = invprob.load_prior(args.prior)
    test = invprob.load_dataset(args.dataset, split="test")
    x = torch.stack([test[i] for i in range(n_images)]).to(prior.dtype)
    problems = build_problems(prior, x)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    results = {}
    for text, (op, y, sigma) in problems.items():
        for method in methods:
            for mode in ("single", "batch"):
                results[(mode, text, method)] = r = time_method(op, prior, x, y, sigma, method, mode)
                print(f"{mode:6s} {text:10s} {method:10s} {mean(r['snr']):6.2f} dB {statistics.median(r['seconds']):8.3f} s/img",
                      flush=True)
    profile = None if args.quick or args.no_profile else profile_iteration(prior, problems["gauss:250"])
    peer = None
    if args.peer_python:
        peer = peer_dip(args.peer_python, x, problems, args.threads, args.peer_images or n_images)
    minutes = (time.perf_counter() - started) / 60
    body = header() + (
        f"- prior: {args.prior}; data: {args.dataset}/test, first {n_images} images; 30 dB noise as `invprob bench`; "
        f"each method at its defaults (σ given)\n- torch threads: {args.threads}; load average {load_before:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end; wall {minutes:.1f} min\n"
    )
    if peer:
        body += (f"- peer: deepinv {peer['deepinv']} (torch {peer['torch']}, {peer['threads']} threads), DIP "
                 f"ConvDecoder {peer['channels']} channels, {peer['iterations']} iterations, on the same matrices and "
                 f"measurements (`benchmarks/peer_deepinv_dip.py`), {len(next(iter(peer['problems'].values()))['snr'])} images per problem\n")
    body += tables(results, methods, peer)
    if profile:
        body += ("\n\n**One iFlow-L iteration vs the prior's passes (gauss:250, batch 1, medians)**\n\n"
                 "| quantity | ms | ratio to g† + g + backward |\n|---|---|---|\n"
                 + "\n".join(f"| {name} | {1e3 * value:.1f} | {value / profile['g_pinv_g_backward']:.2f} |"
                             for name, value in profile.items()))
    print(body)
    if not args.no_record and not args.quick:
        title = "Latency: every method one image at a time and batched" + (", beside deepinv DIP" if peer else "")
        write_section(args.section, title + f" ({', '.join(methods)})", body)


if __name__ == "__main__":
    main()
