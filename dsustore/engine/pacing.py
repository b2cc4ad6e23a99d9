"""Pacing: a long pass that leaves the rest of the process its share of the interpreter.

A migration pass is CPU-bound Python; in a running application its thread competes
for the interpreter with the request threads, which then wait for it. A pacer
called often from the pass's loop lets it work for a short slice, then sleeps
(holding nothing) for as long as the other threads are owed.
"""

from __future__ import annotations

import time

#: how long the pass works before it may sleep, in seconds
SLICE = 0.02
#: how many records the pass handles between two looks at the clock
EVERY = 64


class Pacer:
    """Keeps a loop to ``share`` (above 0, at most 1) of the wall-clock time it runs."""

    def __init__(self, share: float, slice_: float = SLICE) -> None:
        if not 0 < share <= 1:
            raise ValueError("the pass's share of the interpreter is above 0 and at most 1")
        self.share = share
        self.slice = slice_
        self.slept = 0.0
        self._since = time.monotonic()

    def __call__(self) -> None:
        """A point where the loop may give way."""
        now = time.monotonic()
        worked = now - self._since
        if worked >= self.slice:
            pause = worked * (1 - self.share) / self.share
            if pause > 0:
                time.sleep(pause)
                self.slept += pause
            self._since = time.monotonic()

    def restart(self) -> None:
        """The loop starts (again) now: time before does not count as work."""
        self._since = time.monotonic()
