"""ZODB's conflict resolution looks classes up through a process-wide cache of its own.

While a live update holds two versions of the application's code, each thread must
get its own version of a class; these functions route conflict resolution's lookups
of the versioned modules through ``sys.modules`` (where the versions are told apart)
and drop what it cached once the switch is made. ``find_global`` and
``_class_cache`` are private to ``ZODB.ConflictResolution``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from typing import Any

from ZODB import ConflictResolution


def route_class_lookups(modules: Collection[str]) -> Callable[[], None]:
    """Look classes of ``modules`` up in ``sys.modules`` each time; returns the undo."""
    cached = ConflictResolution.find_global
    versioned = set(modules)

    def find_global(*args: Any) -> Any:
        if len(args) == 2 and args[0] in versioned:
            found = getattr(sys.modules.get(args[0]), args[1], None)
            if found is not None:
                return found
        return cached(*args)

    ConflictResolution.find_global = find_global

    def undo() -> None:
        ConflictResolution.find_global = cached
        stale = [key for key in ConflictResolution._class_cache if key[:1] and key[0] in versioned]
        for key in stale:
            del ConflictResolution._class_cache[key]

    return undo
