"""Swapping live objects to their new classes and states after an update commits.

Python has no ``become:``; what it has is ``__class__`` assignment and, for
persistent objects, ghosting. ZODB already invalidates the objects an update wrote in
every connection of the process, at that connection's next transaction boundary, so
their next access reloads the new state. What ZODB does not do is change the class of
an object it already has in a cache. The swapping reader closes that gap: whenever a
connection reloads an object, it first gives the object the class its record names.
It runs in the thread that owns the connection, at the moment ZODB would have loaded
the state anyway, so no other thread's transaction sees a half-swapped object.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ZODB.serialize import ObjectReader

from ._classes import resolve
from ._record import class_name_of
from .errors import DSUError

log = logging.getLogger(__name__)


def swap_class(obj: Any, klass: type) -> None:
    """Give ``obj`` the class ``klass`` in place, keeping every reference to it valid."""
    if type(obj) is klass:
        return
    try:
        obj.__class__ = klass
    except TypeError as err:
        raise DSUError(
            f"cannot swap the object to {klass.__module__}.{klass.__qualname__}: {err}",
            class_name=f"{type(obj).__module__}.{type(obj).__qualname__}",
            oid=getattr(obj, "_p_oid", None),
        ) from err


class SwappingReader(ObjectReader):
    """A connection's reader that swaps a reloaded object to the class its record names."""

    def setGhostState(self, obj: Any, pickle: bytes) -> None:  # noqa: N802 (ZODB's name)
        klass = resolve(class_name_of(pickle))
        if klass is not None and type(obj) is not klass:
            log.debug("swapping %r to %s", obj, klass)
            swap_class(obj, klass)
        super().setGhostState(obj, pickle)


def install_swapping_readers(db: Any) -> int:
    """Make every open or pooled connection of ``db`` swap classes on reload.

    Returns how many connections were given the swapping reader.
    """
    installed = 0
    for conn in list(db.pool.all):
        if not isinstance(conn._reader, SwappingReader):
            conn._reader = SwappingReader(conn, conn._cache, db.classFactory)
            installed += 1
    return installed


def swap_objects(old_objects: Sequence[Any], new_objects: Sequence[Any]) -> None:
    """Make each old object become its new counterpart, all or none (paper: swapObjects).

    Identity is kept: every reference to an old object now sees the new class and
    state. All pairs are checked before any is changed.
    """
    if len(old_objects) != len(new_objects):
        raise ValueError("swap_objects needs as many new objects as old ones")
    done: list[tuple[Any, type, Any]] = []
    try:
        for old, new in zip(old_objects, new_objects):
            saved = (old, type(old), old.__getstate__())
            state = new.__getstate__()
            swap_class(old, type(new))
            done.append(saved)
            old.__setstate__(state)
    except Exception:
        for old, klass, state in reversed(done):
            old.__class__ = klass
            old.__setstate__(state)
        raise
