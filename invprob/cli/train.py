"""``invprob train FAMILY``: train a prior on a dataset (resumable checkpoints; several processes under torchrun)."""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any

from ._common import command_line, key_values


TRAINERS = {
    "trumpet": ("TRUMPET", "train_trumpet", True),
    "realnvp": ("RealNVP", "train_flow", False),
    "nif": ("NIF", "train_nif", True),
    "relaxed": ("RelaxedInjectiveFlow", "train_relaxed_flow", True),
}


def run(args: argparse.Namespace) -> None:
    import torch

    import invprob.priors as priors
    import invprob.training as training

    from ..data import load_dataset

    from ..training import distributed

    class_name, function_name, injective = TRAINERS[args.family]
    world = distributed.setup()  # torchrun: one process group for the whole run
    data_options = {"size": args.size} if args.size else {}
    train_set = load_dataset(args.data, split="train", **data_options)
    test_set = load_dataset(args.data, split="test", **data_options)
    shape = tuple(train_set[0].shape)
    torch.manual_seed(args.seed)
    prior_class = getattr(priors, class_name)
    arch = _arch(prior_class, key_values(args.arch, "--arch"))
    prior = prior_class(shape, args.latent_dim, **arch) if injective else prior_class(shape, **arch)
    result = getattr(training, function_name)(
        prior, train_set, args.out, val_dataset=test_set, resume=args.resume, command=command_line(),
        seed=args.seed, progress=not args.quiet, **key_values(args.opt, "--opt"),
    )
    if world.is_main:
        print(json.dumps(result.get("metrics", {}), indent=2))
        print(f"prior saved to {Path(args.out).resolve()} (load it with invprob.load_prior(path))")
    distributed.shutdown()


def _arch(prior_class: type, arch: dict[str, Any]) -> dict[str, Any]:
    """``arch``, or a ValueError naming the unknown keys and listing the architecture settings of ``prior_class``."""
    parameters = inspect.signature(prior_class).parameters
    valid = [name for name in parameters if name not in ("data_shape", "latent_dim")]
    unknown = sorted(set(arch) - set(valid))
    if unknown:
        raise ValueError(f"--arch: unknown {prior_class.__name__} setting(s) {unknown}; valid settings: {', '.join(valid)}")
    return arch


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = sub.add_parser("train", help="train a prior on a dataset", description=(
        "Train a prior and save it to a checkpoint directory (one checksummed checkpoint.safetensors). "
        "Checkpoints are written atomically; re-run with --resume after an interruption to continue where it "
        "stopped. Under torchrun (torchrun --nproc_per_node=N -m invprob train ...) the processes train one "
        "model with DistributedDataParallel and rank 0 writes the files."))
    p.add_argument("family", choices=sorted(TRAINERS), help="prior family")
    p.add_argument("--data", default="digits", help="dataset name (see invprob.data.list_datasets())")
    p.add_argument("--size", type=int, default=None, help="image size for datasets that take one (ellipses)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--latent-dim", type=int, default=64, help="latent dimension of injective priors (default: 64)")
    p.add_argument("--arch", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture argument of the prior class, e.g. hidden=16 (repeatable)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="training option, e.g. mse_steps=2500 or steps=3000 (repeatable; see the train_* docstrings; "
                        "defaults: trumpet mse_steps=500 ml_steps=200, others steps=2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)
