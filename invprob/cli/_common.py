"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any


def command_line() -> str:
    """The command as typed, for provenance records."""
    return "invprob " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def key_values(items: list[str], flag: str) -> dict[str, Any]:
    """Parse repeated ``key=value`` arguments; values are read as JSON when they parse, else kept as text."""
    out: dict[str, Any] = {}
    for text in items:
        key, sep, raw = text.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag}: expected key=value, got {text!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out
