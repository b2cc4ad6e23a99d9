"""Showing a running update's progress on a terminal or in a log.

A :class:`ProgressReporter` is a callable taking dsustore's ``Progress`` objects. On
a terminal it redraws one status line (bar, counts, rate, ETA) in place with ``\\r``;
anywhere else (a pipe, a CI log) it writes a plain line every few seconds, so logs
stay readable and small.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ..engine import Progress

_BAR_WIDTH = 24


def format_duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s`` or ``12s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _total(progress: Progress) -> int | None:
    """The total, when it is one: a count the scan has already gone past was not."""
    total = progress.total
    return total if total and progress.scanned <= total else None


def describe(progress: Progress) -> str:
    """One line of text for ``progress``, without a bar."""
    total = _total(progress)
    of_total = f"/{total:,}" if total else ""
    return (f"{progress.phase}: {progress.scanned:,}{of_total} scanned, {progress.migrated:,} migrated, "
            f"{progress.rate:,.0f}/s, ETA {format_duration(progress.eta)}")


def bar(progress: Progress, width: int = _BAR_WIDTH) -> str:
    """A text bar ``[#####.....] 42%`` (empty brackets when the total is unknown)."""
    total = _total(progress)
    if not total:
        return "[" + " " * width + "]"
    fraction = min(max(progress.scanned / total, 0.0), 1.0)
    filled = int(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%}"


class ProgressReporter:
    """Progress callback for a patch: a live line on a TTY, periodic log lines elsewhere."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None,
                 interval: float | None = None) -> None:
        self.stream: Any = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.interval = interval if interval is not None else (0.1 if self.tty else 5.0)
        self._last = 0.0
        self._drawn = False

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        final = progress.total is not None and progress.scanned >= progress.total
        if not final and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            self.stream.write(f"\r{bar(progress)} {describe(progress)}\x1b[K")
            self._drawn = True
        else:
            self.stream.write(describe(progress) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the live line, so what is printed next starts on its own line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
