"""``invprob methods [NAME]``: the reconstruction methods, or every option of one.

Without a name: each method with its kind (``map``: a point estimate using the prior;
``posterior``: samples, mean and standard deviation; ``baseline``: no trained prior) and a one-line
description. With a name: each option with its type, default, allowed range and description,
read from the method's options model (the same model that validates ``solve(..., **options)``).
"""

from __future__ import annotations

import argparse
import textwrap
import typing
from typing import Any

KINDS = ("map", "posterior", "baseline")


def method_kind(cls: type) -> str:
    """``map``, ``posterior`` or ``baseline`` for a registered solver class."""
    kind = getattr(cls, "kind", None)
    if kind in KINDS:
        return kind
    if cls.name in ("pinv", "tv"):
        return "baseline"
    if cls.name in ("svi", "avi", "ambient-vi", "langevin", "pl-mcmc"):
        return "posterior"
    return "map"


def type_name(annotation: Any) -> str:
    """A readable name of an options field's type: ``int``, ``float | None``, ``'adam' | 'gd'``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(metadata: list[Any], annotation: Any) -> list[str]:
    out = []
    for item in metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}")
    for arg in typing.get_args(annotation):  # bounds inside e.g. Annotated[float, Field(gt=0)] | list[...] | None
        if typing.get_origin(arg) is typing.Annotated:
            for extra in typing.get_args(arg)[1:]:
                out += _bounds(getattr(extra, "metadata", [extra]), None)
        elif typing.get_args(arg):
            out += _bounds([], arg)
    return list(dict.fromkeys(out))


def option_rows(method: str) -> list[dict[str, str]]:
    """One row per option of ``method``: name, type, default, range, description."""
    from ..solvers.base import options_model

    rows = []
    for name, field in options_model(method).model_fields.items():
        default = "required" if field.is_required() else f"default {field.default!r}"
        bounds = _bounds(list(field.metadata), field.annotation)
        rows.append({"name": name, "type": type_name(field.annotation), "default": default,
                     "range": ", ".join(bounds) or "-", "description": field.description or ""})
    return rows


def method_rows(kind: str | None = None) -> list[dict[str, str]]:
    """One row per registered method (optionally of one ``kind``): name, kind, description."""
    from ..solvers.base import _lookup, list_methods

    rows = []
    for name in list_methods():
        cls = _lookup(name)
        rows.append({"name": name, "kind": method_kind(cls), "description": cls.description})
    return [r for r in rows if kind is None or r["kind"] == kind]


def format_methods(rows: list[dict[str, str]]) -> str:
    """The method list as aligned text."""
    lines = [f"{'method':12s} {'kind':10s} description"]
    lines += [f"{r['name']:12s} {r['kind']:10s} {r['description']}" for r in rows]
    lines.append("\n`invprob methods METHOD` lists a method's options; pass them as solve(..., OPTION=value) "
                 "or `invprob solve --method METHOD --opt OPTION=value`.")
    return "\n".join(lines)


def format_options(method: str, rows: list[dict[str, str]]) -> str:
    """A method's options as one block per option."""
    from ..solvers.base import _lookup

    cls = _lookup(method)
    lines = [f"{method} ({method_kind(cls)}): {cls.description}", ""]
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
