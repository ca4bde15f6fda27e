"""``invprob methods [NAME]``: the reconstruction methods, or every option of one.

Without a name: each method with its kind (``map``: a point estimate using the prior;
``posterior``: samples, mean and standard deviation; ``baseline``: no trained prior) and a one-line
description. With a name: each option with its type, default, allowed range and description,
read from the method's options model (the same model that validates ``solve(..., **options)``).
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

KINDS = ("map", "posterior", "baseline")


def _default_text(option: Any) -> str:
    return "required" if option.required else f"default {option.default!r}"


def option_rows(method: str) -> list[dict[str, str]]:
    """One row per option of ``method`` (from :func:`invprob.solvers.describe_method`): name, type, default, range, description."""
    from ..solvers import describe_method

    return [{"name": o.name, "type": o.type, "default": _default_text(o), "range": o.range or "-",
             "description": o.description} for o in describe_method(method).options]


def method_rows(kind: str | None = None) -> list[dict[str, str]]:
    """One row per registered method (optionally of one ``kind``): name, kind, description."""
    from ..solvers import describe_method, list_methods

    rows = []
    for name in list_methods(kind):
        info = describe_method(name)
        rows.append({"name": name, "kind": info.kind, "description": info.description})
    return rows


def format_methods(rows: list[dict[str, str]]) -> str:
    """The method list as aligned text."""
    lines = [f"{'method':12s} {'kind':10s} description"]
    lines += [f"{r['name']:12s} {r['kind']:10s} {r['description']}" for r in rows]
    lines.append("\n`invprob methods METHOD` lists a method's options; pass them as solve(..., OPTION=value) "
                 "or `invprob solve --method METHOD --opt OPTION=value`.")
    return "\n".join(lines)


def format_options(method: str, rows: list[dict[str, str]]) -> str:
    """A method's options as one block per option."""
    from ..solvers import describe_method

    info = describe_method(method)
    lines = [f"{method} ({info.kind}): {info.description}"]
    if info.references:
        lines += textwrap.wrap(f"References: {info.references}", width=100, subsequent_indent="    ")
    lines.append("")
    for r in rows:
        lines.append(f"{r['name']}: {r['type']}, {r['default']}" + (f", range {r['range']}" if r["range"] != "-" else ""))
        lines += textwrap.wrap(r["description"], width=96, initial_indent="    ", subsequent_indent="    ")
    if not rows:
        lines.append("(no options)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    if args.name:
        print(format_options(args.name, option_rows(args.name)))
    else:
        print(format_methods(method_rows(args.kind)))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = sub.add_parser("methods", help="list the reconstruction methods or the options of one",
                       description="List the reconstruction methods with their kind, or every option of one "
                                   "method with its type, default, range and description.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("name", nargs="?", help="a method whose options to list")
    p.add_argument("--kind", choices=KINDS, default=None, help="list only methods of this kind")
    p.set_defaults(handler=run)
