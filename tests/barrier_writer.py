"""A guarded writer creating items at full speed, moving to newer code when it is stale."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import transaction
from ZODB.POSException import ConflictError

import barrieritems
from dsustore import StaleCodeError, current, guard_stale_code, known_revisions


def _code_of(db: Any, folder: Path) -> tuple[set[str], dict[str, int]]:
    """The revisions a process deployed now would know, and the fields its code gives items."""
    heads = current(db)
    known = known_revisions(folder, heads[0]) if heads else set()
    return known, {f"f{int(revision)}": int(revision) for revision in known}


#: at most this many items on one release's code: the database stays small enough for every
#: upgrade's pass to be quick even on a busy machine
PER_RELEASE = 1500


def write_until(db: Any, folder: Path, stop: Callable[[], bool]) -> dict[str, Any]:
    """Create items at full speed until ``stop()``; returns what was committed and how often
    it was refused. After ``PER_RELEASE`` items on one release's code it waits for the next
    upgrade to commit before writing again."""
    heads = current(db)
    known, fields = _code_of(db, folder)
    on_this_release = 0
    guard = guard_stale_code(db, known)
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    committed: list[int] = []
    stale = conflicts = 0
    longest = 0.0
    number = 0
    try:
        while not stop():
            if on_this_release >= PER_RELEASE:
                if current(db) == heads:
                    time.sleep(0.01)
                    continue
                on_this_release = 0
            started = time.monotonic()
            tm.begin()
            try:
                conn.root()["items"][number] = barrieritems.Item(number, **fields)
                tm.commit()
            except ConflictError:
                tm.abort()
                conflicts += 1
                continue
            except StaleCodeError:
                tm.abort()
                stale += 1
                heads = current(db)
                known, fields = _code_of(db, folder)  # "deployed" the new release
                guard.allow(known)
                on_this_release = 0
                continue
            longest = max(longest, time.monotonic() - started)
            committed.append(number)
            number += 1
            on_this_release += 1
    finally:
        guard.uninstall()
        conn.close()
    return {"committed": committed, "stale": stale, "conflicts": conflicts, "longest": longest}
