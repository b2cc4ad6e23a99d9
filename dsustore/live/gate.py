"""The commit gate: which code each of a running application's transactions runs.

The application enters :meth:`CommitGate.transaction` around each of its
transactions (a web request, as pyramid_tm scopes them). The gate numbers the
versions of the code the process has run (*generations*): a transaction runs,
from its start to its end, the code of the generation it began in -- or, when its
snapshot (taken at its first transaction boundary) already holds the data of a
newer generation, that generation's -- and reads the snapshot it began with; so a
request that only reads is never held, whatever an update does meanwhile. A live
update advances the generation at the switch to the new code; writes that would
commit across the switch wait at the write barrier and are retried on the new code
(:mod:`dsustore.runtime.barrier`).

:meth:`CommitGate.closed` is the stronger form, for the moment ``sys.modules``
itself changes (importing the new code): it waits for the transactions in flight
to end and holds new ones.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import GateTimeoutError


class CommitGate:
    """Application transactions, each on the code of the generation it began in."""

    def __init__(self, *, drain_timeout: float = 30.0) -> None:
        self.drain_timeout = drain_timeout
        self._cond = threading.Condition()
        self._active = 0
        self._by_generation: Counter[int] = Counter()
        self._closed = False
        self._mine = threading.local()
        self._retired: list[tuple[int, Callable[[], None]]] = []
        #: the code's generation: advanced at each switch to new code
        self.generation = 0
        #: the longest time a transaction waited at the gate, in seconds
        self.longest_wait = 0.0
        #: how long the gate was last closed, in seconds
        self.last_closed = 0.0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Scope one application transaction: it runs the code of the generation it begins
        in. Waits only while the gate is closed (new code being imported)."""
        started = time.monotonic()
        with self._cond:
            while self._closed and not self._owns_close():
                self._cond.wait()
            self._active += 1
            count = getattr(self._mine, "count", 0)
            if count == 0:  # the outermost scope decides the generation
                self._mine.generation = self.generation
                self._mine.settled = False
            self._by_generation[self._mine.generation] += 1
        self._mine.count = count + 1
        waited = time.monotonic() - started
        if waited > self.longest_wait:
            self.longest_wait = waited
        try:
            yield
        finally:
            self._mine.count -= 1
            with self._cond:
                self._active -= 1
                generation = self._mine.generation  # it may have moved on
                self._by_generation[generation] -= 1
                if not self._by_generation[generation]:
                    del self._by_generation[generation]
                due = self._due()
                self._cond.notify_all()
            for callback in due:
                callback()

    def settle_thread(self, decide: Callable[[int], int | None]) -> None:
        """At the first transaction boundary of this thread's transaction, before it ran
        any code on its snapshot: ``decide(generation)`` names the generation whose code
        it runs instead (its snapshot turned out to hold that generation's data), or
        None to keep its own. Later calls do nothing: a transaction never changes code
        once it has run some."""
        if getattr(self._mine, "count", 0) == 0 or self._mine.settled:
            return
        self._mine.settled = True
        generation = decide(self._mine.generation)
        if generation is None:
            return
        with self._cond:
            before = self._mine.generation
            if generation <= before:
                return
            self._mine.generation = generation
            self._by_generation[generation] += 1
            self._by_generation[before] -= 1
            if not self._by_generation[before]:
                del self._by_generation[before]
            due = self._due()
        for callback in due:
            callback()

    def thread_generation(self) -> int | None:
        """The generation of the transaction this thread runs; None outside one."""
        if getattr(self._mine, "count", 0) == 0:
            return None
        return int(self._mine.generation)

    def advance(self) -> int:
        """Start a new generation (the process switched to new code); its number."""
        with self._cond:
            self.generation += 1
            return self.generation

    def when_retired(self, generation: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` once no transaction of a generation before ``generation`` runs
        (at once if none does), in the thread that ends the last of them."""
        with self._cond:
            self._retired.append((generation, callback))
            due = self._due()
        for ready in due:
            ready()

    def _due(self) -> list[Callable[[], None]]:
        oldest = min(self._by_generation, default=None)
        due = [callback for generation, callback in self._retired
               if oldest is None or oldest >= generation]
        self._retired = [(generation, callback) for generation, callback in self._retired
                         if not (oldest is None or oldest >= generation)]
        return due

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
