"""The commit gate: holds a running application's transactions for the moment an update commits.

The application enters :meth:`CommitGate.transaction` around each of its
transactions (a web request, as pyramid_tm scopes them); a live update closes the
gate around its final commit. Closing waits for the transactions in flight to end
and holds new ones until the update has committed and the process runs the new
code, so no transaction straddles the switch. Everything before that moment (the
long migration pass) runs with the gate open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import GateTimeoutError


class CommitGate:
    """A readers-writer gate: many application transactions, or one update commit."""

    def __init__(self, *, drain_timeout: float = 30.0) -> None:
        self.drain_timeout = drain_timeout
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False
        self._mine = threading.local()
        #: the longest time a transaction waited at the gate, in seconds
        self.longest_wait = 0.0
        #: how long the gate was last closed, in seconds
        self.last_closed = 0.0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Scope one application transaction; waits while an update commits."""
        started = time.monotonic()
        with self._cond:
            while self._closed and not self._owns_close():
                self._cond.wait()
            self._active += 1
        self._mine.count = getattr(self._mine, "count", 0) + 1
        waited = time.monotonic() - started
        if waited > self.longest_wait:
            self.longest_wait = waited
        try:
            yield
        finally:
            self._mine.count -= 1
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextmanager
    def closed(self) -> Iterator[None]:
        """Hold new transactions and wait for those in flight (but the caller's own) to end."""
        started = time.monotonic()
        own = getattr(self._mine, "count", 0)
        with self._cond:
            while self._closed:  # another update is committing
                self._cond.wait()
            self._closed = True
            self._mine.closer = True
            deadline = started + self.drain_timeout
            while self._active > own:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._reopen()
                    raise GateTimeoutError(
                        f"{self._active - own} transaction(s) still running after "
                        f"{self.drain_timeout:.0f}s; the update did not commit")
                self._cond.wait(left)
        try:
            yield
        finally:
            with self._cond:
                self._reopen()
            self.last_closed = time.monotonic() - started

    @property
    def is_closed(self) -> bool:
        return self._closed

    def _owns_close(self) -> bool:
        return getattr(self._mine, "closer", False)

    def _reopen(self) -> None:
        self._closed = False
        self._mine.closer = False
        self._cond.notify_all()
