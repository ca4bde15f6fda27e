"""``invprob priors [NAME]``: list the shipped priors or print one model card.

Answers from the shipped ``MANIFEST.json`` and ``MODEL_CARD.md`` files alone: listing five names
must not import torch or scikit-learn (which ``invprob.priors`` does, about 3 s on an idle core), so
this module reads the files itself. Integrity (checksums) is checked when a prior is loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: Where the shipped priors live (the same folder as ``invprob.priors.pretrained.PRETRAINED_DIR``).
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "priors" / "pretrained"


def shipped_manifest(directory: Path = PRETRAINED_DIR) -> dict[str, dict[str, Any]]:
    """The manifest of the shipped priors (``{}`` when none is installed)."""
    path = directory / "MANIFEST.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def run(args: argparse.Namespace) -> None:
    manifest = shipped_manifest()
    if args.name:
        if args.name not in manifest:
            valid = ", ".join(sorted(manifest)) or "(none installed)"
            raise ValueError(f"name: expected a shipped prior ({valid}), got {args.name!r}")
        card = PRETRAINED_DIR / args.name / "MODEL_CARD.md"
        entry = {k: v for k, v in manifest[args.name].items() if k != "sha256"}
        print(card.read_text() if card.is_file() else json.dumps(dict(entry, name=args.name), indent=2))
        return
    if not manifest:
        print("no shipped priors are installed")
    for name, entry in sorted(manifest.items()):
        print(f"{name:20s} {entry.get('description', '')}")
    if manifest:
        print("\n`invprob priors NAME` prints a model card; `invprob.load_prior(NAME)` loads one.")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = sub.add_parser("priors", help="list or describe the shipped priors",
                       description="List the shipped pretrained priors, or print one model card.")
    p.add_argument("name", nargs="?", help="a shipped prior to describe")
    p.set_defaults(handler=run)
