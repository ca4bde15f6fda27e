"""Progress reporting for every call that can take more than a few seconds.

:func:`progress` returns a bar that adapts to where the output goes:

- an interactive terminal or a Jupyter notebook: a ``tqdm`` bar (``tqdm.auto`` picks the widget);
- anything else (a log file, ``nohup``, a pipe, CI): one plain line every ``interval`` seconds
  (default 10) with the step count, the rate and an estimate of the time left, and one at the end;
- ``enabled=False``: nothing.

Example:
    >>> with progress(3, "demo", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update(loss=0.5)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

DEFAULT_INTERVAL = 10.0


def _interactive(stream: TextIO) -> bool:
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


class Progress:
    """A progress indicator over ``total`` steps (see :func:`progress`)."""

    def __init__(self, total: int | None, desc: str, enabled: bool = True, *, interval: float = DEFAULT_INTERVAL,
                 stream: TextIO | None = None) -> None:
        self.total, self.desc, self.enabled, self.interval = total, desc, enabled, interval
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.postfix: dict[str, Any] = {}
        self._start = self._last = time.monotonic()
        self._printed_count: int | None = None
        self._bar = None
        if enabled and _interactive(self.stream):
            self._bar = tqdm(total=total, desc=desc, leave=False, file=self.stream)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n`` steps; ``postfix`` values (e.g. ``loss=...``) are shown beside the count."""
        self.count += n
        if postfix:
            self.postfix = postfix
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(_format_postfix(postfix), refresh=False)
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last >= self.interval:
            self._line()

    def write(self, message: str) -> None:
        """Print a message without breaking the bar (nothing when disabled)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """End the indicator; a plain-line reporter that printed before prints a final line, unless its last line already showed the final count."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._printed_count is not None and self._printed_count != self.count:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        self._last, self._printed_count = now, self.count
        elapsed = now - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.count}" + (f"/{self.total}" if self.total else "")]
        parts.append(f"{elapsed:.0f} s elapsed")
        if self.total and rate > 0 and self.count < self.total:
            parts.append(f"~{(self.total - self.count) / rate:.0f} s left")
        if self.postfix:
            parts.append(_format_postfix(self.postfix))
        print(", ".join(parts), file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int | None, desc: str, enabled: bool | None = True, *, interval: float = DEFAULT_INTERVAL,
             stream: TextIO | None = None) -> Progress:
    """A progress indicator over ``total`` steps named ``desc``; ``enabled=False`` (or None) silences it."""
    return Progress(total, desc, bool(enabled), interval=interval, stream=stream)


def _format_postfix(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
