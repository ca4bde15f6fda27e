"""Parameters and training time per epoch of TRUMPET vs RealNVP at the same data shape (1x32x32).

Usage: ``python benchmarks/bench_priors.py [--steps N] [--batch-size B]``. Trains each model for
``N`` steps with the real training losses and :func:`invprob.training.fit` (checkpoints included)
on the digits training set (or random images when :mod:`invprob.data` is unavailable), times the
steps after one warm-up step, and extrapolates to one epoch. Writes the ``priors`` section of
``benchmarks/BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a shared 2-core CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
