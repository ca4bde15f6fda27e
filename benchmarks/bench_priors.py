"""Parameters and training time per epoch of TRUMPET vs RealNVP at the same data shape (1x32x32).

Usage: ``python benchmarks/bench_priors.py [--steps N] [--batch-size B]``. Trains each model for
``N`` steps with the real training losses and :func:`invprob.training.fit` (checkpoints included)
on the digits training set (or random images when :mod:`invprob.data` is unavailable), times the
steps after one warm-up step, and extrapolates to one epoch. Writes the ``priors`` section of
``benchmarks/BENCHMARKS.md``.

``python benchmarks/bench_priors.py --distributed 1,2 [--steps N]`` instead launches ``torchrun``
with 1 and 2 processes (1 thread each, gloo on CPU) on TRUMPET phase 1 with the trumpet-digits
architecture and the same global batch, and writes the ``distributed`` section: steps per second
and the scaling efficiency ``rate_N / (N rate_1)``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import header, write_section  # noqa: E402
from invprob.priors.pretrained import load_prior  # noqa: E402
from invprob.training import fit  # noqa: E402
from invprob.training.priors import _ml_loss, _mse_loss  # noqa: E402

SHAPE = (1, 32, 32)


def training_images() -> tuple[torch.Tensor, str]:
    """The digits training images, or random ones if the data package is missing."""
    try:
        from invprob.data.digits import digits_dataset
    except ImportError:
        return torch.rand(1500, *SHAPE) * 2 - 1, "random 1x32x32 images (1500)"
    data = digits_dataset("train")
    return torch.stack([data[i] for i in range(len(data))]), f"digits train set ({len(data)} images, 1x32x32)"


def shipped_architecture(name: str) -> torch.nn.Module:
    """A freshly initialised model with the architecture of the shipped prior ``name``."""
    shipped = load_prior(name)
    return type(shipped)(**shipped.config())


def flow_loss(model, batch, generator):
    noise = (torch.rand(batch.shape, generator=generator) - 0.5) * (2.0 / 256)
    nll = -model.log_prob(batch + noise).mean() / model.data_dim
    return nll, {}


def seconds_per_step(model, loss_fn, images, steps, batch_size, params=None) -> float:
    """Mean wall seconds per optimizer step of ``fit`` (one warm-up step excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = dict(batch_size=batch_size, progress=False, checkpoint_every=10**6)
        fit(model, loss_fn, images, Path(tmp) / "warm", params=params, steps=1, **opts)
        start = time.perf_counter()
        fit(model, loss_fn, images, Path(tmp) / "run", params=params, steps=steps, **opts)
        return (time.perf_counter() - start) / steps


def distributed_worker(steps: int, batch_size: int) -> None:
    """One torchrun rank: TRUMPET phase 1 (trumpet-digits architecture); rank 0 prints steps per second as JSON."""
    from invprob.training import distributed

    world = distributed.setup()
    torch.manual_seed(0)
    images, _ = training_images()
    model = shipped_architecture("trumpet-digits")
    params = list(model.injective.parameters())
    warm = 3
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(os.environ.get("BENCH_RUN_DIR", Path(tmp) / "run"))  # one directory shared by every rank
        opts = dict(batch_size=batch_size, progress=False, checkpoint_every=10**6, steps=warm + steps)
        fit(model, _mse_loss(0.0, 8), images, run, params=params, stop_after=warm, **opts)
        world.barrier()
        start = time.perf_counter()
        fit(model, _mse_loss(0.0, 8), images, run, params=params, resume=True, **opts)
        seconds = time.perf_counter() - start
    if world.is_main:
        print(json.dumps({"processes": world.size, "steps_per_s": steps / seconds}), flush=True)
    distributed.shutdown()


def distributed_benchmark(sizes: list[int], steps: int, batch_size: int) -> None:
    """Run :func:`distributed_worker` under torchrun for each process count; write the ``distributed`` section."""
    rates: dict[int, float] = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, OMP_NUM_THREADS="1", BENCH_RUN_DIR=str(Path(tmp) / "run"))
            command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", __file__,
                       "--worker", "--steps", str(steps), "--batch-size", str(batch_size)]
            out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        rates[n] = json.loads(out.strip().splitlines()[-1])["steps_per_s"]
        print(f"{n} process(es): {rates[n]:.3f} steps/s", flush=True)
    base = rates[sizes[0]] / sizes[0] if sizes[0] == 1 else None
    lines = ["| processes (1 thread each) | global batch | steps / s | images / s | scaling efficiency |", "|---:|---:|---:|---:|---:|"]
    for n, rate in rates.items():
        efficiency = f"{rate / (n * base):.2f}" if base else "—"
        lines.append(f"| {n} | {batch_size} | {rate:.3f} | {rate * batch_size:.1f} | {efficiency} |")
    body = (
        header()
        + f"- TRUMPET phase 1 (eq. 3) with the trumpet-digits architecture on the digits training set, "
        f"global batch {batch_size} split over the processes; {steps} timed steps after 3 warm-up steps; "
        "gloo on CPU, `torchrun --nproc_per_node=N`, OMP_NUM_THREADS=1\n"
        + f"- load average at the end (the CPU is shared with other jobs): {os.getloadavg()[0]:.1f}\n"
        + "- scaling efficiency = rate with N processes / (N x rate with 1 process), for the same global batch "
        "(strong scaling; 1.0 would mean no cost for the gradient all-reduce)\n"
        + "- the GPU path (nccl, one rank per GPU) was not run: no GPU on this machine\n\n"
        + "\n".join(lines)
    )
    write_section("distributed", "Training on several processes (torchrun, DDP)", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a shared 2-core CPU)")
    parser.add_argument("--distributed", default=None, metavar="N,M", help="process counts for the torchrun benchmark")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        return distributed_worker(args.steps, args.batch_size)
    if args.distributed:
        return distributed_benchmark([int(n) for n in args.distributed.split(",")], args.steps, args.batch_size)
    torch.manual_seed(0)
    images, source = training_images()
    per_epoch = len(images) // args.batch_size
    trumpet, realnvp = (shipped_architecture(name) for name in ("trumpet-digits", "realnvp-digits"))
    rows = [
        ("TRUMPET phase 1 (eq. 3, injective part)", trumpet, _mse_loss(0.0, 8), list(trumpet.injective.parameters())),
        ("TRUMPET phase 2 (eq. 4, latent flow)", trumpet, _ml_loss, [*trumpet.latent_flow.parameters(), trumpet.base_mean, trumpet.base_log_std]),
        ("RealNVP (maximum likelihood)", realnvp, flow_loss, None),
    ]
    lines = [
        "| model / phase | parameters (trained) | s / step | steps / s | s / epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    seconds: list[float] = []
    for name, model, loss_fn, params in rows:
        trained = sum(p.numel() for p in (params if params is not None else model.parameters()))
        sec = seconds_per_step(model, loss_fn, images, args.steps, args.batch_size, params)
        lines.append(f"| {name} | {trained:,} | {sec:.3f} | {1 / sec:.2f} | {sec * per_epoch:.1f} |")
        seconds.append(sec)
        print(lines[-1], flush=True)
    ratio = seconds[2] / seconds[0]
    body = (
        header()
        + f"- data: {source}; batch {args.batch_size}, {per_epoch} steps per epoch; {args.steps} timed steps after one warm-up\n"
        + f"- the shipped architectures, freshly initialised: TRUMPET `{trumpet.config()}`, "
        + f"{sum(p.numel() for p in trumpet.parameters()):,} parameters in all; "
        + f"RealNVP `{realnvp.config()}`, {sum(p.numel() for p in realnvp.parameters()):,} parameters\n"
        + f"- load average at the end (the CPU is shared): {os.getloadavg()[0]:.1f}\n\n"
        + "\n".join(lines)
        + f"\n\nA RealNVP step costs {ratio:.1f}x a TRUMPET phase-1 step (the paper's claim that injective flows "
        "train faster holds per step at this size)."
    )
    write_section("priors", "Priors: TRUMPET vs RealNVP training cost (1x32x32)", body)


if __name__ == "__main__":
    main()
