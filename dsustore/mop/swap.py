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
from collections.abc import Mapping, Sequence
from typing import Any

from ZODB.serialize import ObjectReader

from ..errors import DSUError
from ..storage.connections import (
    cache_of,
    pooled_connections,
    reader_of,
    reset_cache,
    reset_cache_on_next_open,
    set_reader,
)
from .classes import resolve
from .records import class_name_of

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


def swap_live_objects(db: Any, renames: Mapping[str, str] | None = None) -> int:
    """After a commit, make the objects the process holds take the classes of the code.

    Every connection gets the swapping reader, so an object is swapped when ZODB
    reloads it, in the thread that owns it. An idle (pooled) connection holding an
    object whose class the code has replaced starts with an empty cache instead:
    ghosting only those objects would leave them referenced, under their old class,
    from containers that did not change (a BTree bucket), and writing such a
    container would then name a class the code no longer has. Busy connections do
    the same the next time they are opened (as ZODB's ``resetCaches`` does, for this
    database's connections only). (Assigning ``__class__`` to a persistent object
    outside a load would load or register it; a load is the one safe moment.)
    Returns how many cached objects were dropped.
    """
    renames = dict(renames or {})
    connections, idle = pooled_connections(db)
    current: dict[type, type | None] = {}
    dropped = 0
    any_stale = False
    for conn in connections:
        cache = cache_of(conn)
        if not isinstance(reader_of(conn), SwappingReader):
            set_reader(conn, SwappingReader(conn, cache, db.classFactory))
        stale = False
        for _oid, obj in cache.items():
            klass = type(obj)
            if klass not in current:
                name = f"{klass.__module__}.{klass.__qualname__}"
                current[klass] = resolve(renames.get(name, name))
            target = current[klass]
            if target is not None and target is not klass:
                stale = True
                break
        any_stale = any_stale or stale
        if stale and id(conn) in idle:
            dropped += len(cache)
            reset_cache(conn)
    if any_stale:  # the busy ones, when they are next opened
        for conn in connections:
            if id(conn) not in idle:
                reset_cache_on_next_open(conn)
    return dropped


def swap_objects(old_objects: Sequence[Any], new_objects: Sequence[Any]) -> None:
    """Make each old object become its new counterpart, all or none (paper: swapObjects).

    Identity is kept: every reference to an old object now sees the new class and
    state. A pair that cannot be swapped undoes the pairs already swapped.
    """
    if len(old_objects) != len(new_objects):
        raise ValueError("swap_objects needs as many new objects as old ones")
    done: list[tuple[Any, type, Any]] = []
    try:
        for old, new in zip(old_objects, new_objects, strict=True):
            saved = (old, type(old), _copy(old.__getstate__()))
            state = new.__getstate__()
            swap_class(old, type(new))
            done.append(saved)
            _set_state(old, state)
    except Exception:
        for old, klass, state in reversed(done):
            old.__class__ = klass
            _set_state(old, state)
        raise


def _set_state(obj: Any, state: Any) -> None:
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None:
        setstate(state)
    else:
        obj.__dict__.clear()
        obj.__dict__.update(state or {})


def _copy(state: Any) -> Any:
    # object.__getstate__ may return the instance's own __dict__, which the swap clears
    return dict(state) if isinstance(state, dict) else state

