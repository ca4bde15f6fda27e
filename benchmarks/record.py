"""Write one benchmark's results into its own section of ``benchmarks/BENCHMARKS.md``.

Each benchmark script owns a section delimited by HTML comments, so scripts can be re-run in any
order without clobbering each other's tables. Every section records the machine, the date, the
command and the torch version alongside the table.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).with_name("BENCHMARKS.md")


def machine_line() -> str:
    """One line naming the machine and software the figures were measured on."""
    return (
        f"{platform.node() or 'unknown host'}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def header(command: str | None = None) -> str:
    """Markdown lines with date, machine and command for a section."""
    command = command or " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"- date: {date}\n- machine: {machine_line()}\n- command: `{command}`\n"


def write_section(name: str, title: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``title`` and ``body``."""
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{start}\n## {title}\n\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures measured by the scripts in this folder; each section says how.\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
