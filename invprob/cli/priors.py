"""``invprob priors [NAME]``: list the shipped priors or print one model card."""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> None:
    from ..priors.pretrained import describe_prior, list_priors

    if args.name:
        entry = describe_prior(args.name)
        print(entry.pop("model_card") or json.dumps(entry, indent=2))
        return
    shipped = list_priors()
    if not shipped:
        print("no shipped priors are installed")
    for name, description in shipped.items():
        print(f"{name:20s} {description}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = sub.add_parser("priors", help="list or describe the shipped priors",
                       description="List the shipped pretrained priors, or print one model card.")
    p.add_argument("name", nargs="?", help="a shipped prior to describe")
    p.set_defaults(handler=run)
