"""Swapping live objects to their new classes and states after an update commits.

Python has no ``become:``; what it has is class assignment and, for persistent
objects, ghosting. ZODB already invalidates the objects an update wrote in every
connection of the process, at that connection's next transaction boundary, so their
next access reloads the new state. What ZODB does not do is change the class of an
object it already has in a cache. Here every connection of the database, pooled or
held open across transactions, does so at its next transaction boundary, in the
thread that owns it: every object its cache holds, ghost or loaded, takes the class
the code now has for it, in place -- every reference to it sees the new class,
``type()`` and ``isinstance`` answer right without loading it -- and, where the code
itself changed, loaded objects become ghosts so that values stored inside them are
rebuilt from the new code when next read. Nothing in a transaction that is still
running changes under it. A connection that reloads an object later (the swapping
reader) gives it the class its record names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ZODB.serialize import ObjectReader

from ..errors import DSUError
from ..storage.connections import (
    at_transaction_boundary,
    cache_of,
    ghostify_unchanged,
    pooled_connections,
    reader_of,
    reset_cache,
    set_class,
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


class ClassPlan:
    """Which class each class found in a cache becomes: the code's class of the same
    name, or of the name a rename gives it.

    Worked out, for the classes the caches hold, by the thread that committed (which
    runs the new code), and shared by every connection of the process; a class
    loaded since is looked up by the thread that meets it.
    """

    def __init__(self, renames: Mapping[str, str] | None = None) -> None:
        self.renames = dict(renames or {})
        self._targets: dict[type, type | None] = {}

    def prepare(self, classes: set[type]) -> None:
        """Work out the targets of ``classes`` now."""
        for klass in classes:
            self._targets[klass] = self._lookup(klass)

    def target(self, klass: type) -> type | None:
        """The class ``klass``'s instances take, or None when they keep it."""
        try:
            return self._targets[klass]
        except KeyError:
            return self._lookup(klass)

    def _lookup(self, klass: type) -> type | None:
        name = f"{klass.__module__}.{klass.__qualname__}"
        found = resolve(self.renames.get(name, name))
        return found if found is not None and found is not klass else None


def swap_cached_objects(conn: Any, plan: ClassPlan) -> int:
    """Give every object ``conn``'s cache holds the class ``plan`` names, in place; the
    number swapped. Call it between two of the connection's transactions only.

    When any class changed, loaded objects become ghosts (values stored inside them
    are rebuilt by the new code when next read). An object whose new class has
    another layout cannot be swapped in place: the connection then starts with an
    empty cache instead, as ZODB does for new code.
    """
    swapped = 0
    stuck = None
    for _oid, obj in cache_of(conn).items():
        target = plan.target(type(obj))
        if target is None:
            continue
        try:
            set_class(obj, target)
            swapped += 1
        except TypeError as err:
            stuck = f"{type(obj).__qualname__} cannot take its new class {target.__qualname__} " \
                    f"in place ({err})"
    if stuck is not None:
        log.warning("%s; the connection starts with an empty cache", stuck)
        reset_cache(conn)
    elif swapped:
        ghostify_unchanged(conn)
    return swapped


def swap_live_objects(db: Any, renames: Mapping[str, str] | None = None) -> int:
    """After a commit, make the objects the process holds take the classes of the code.

    Every connection of ``db`` gets the swapping reader, and swaps its cached objects
    at its next transaction boundary, in its own thread (see the module). Returns how
    many connections will swap.
    """
    plan = ClassPlan(renames)
    connections = pooled_connections(db)
    plan.prepare({type(obj) for conn in connections for _oid, obj in cache_of(conn).items()})

    def swap_once(conn: Any) -> bool:
        swap_cached_objects(conn, plan)
        return True  # done: later boundaries have nothing of this commit to swap

    for conn in connections:
        if not isinstance(reader_of(conn), SwappingReader):
            set_reader(conn, SwappingReader(conn, cache_of(conn), db.classFactory))
        at_transaction_boundary(conn, swap_once)
    return len(connections)


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

