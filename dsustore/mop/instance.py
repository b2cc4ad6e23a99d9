"""One stored object while it is being migrated.

Its new state is a plain dict decoded from the record; the old state is a separate,
read-only view decoded only if a policy asks for it; the object itself (an instance
of the class the code has now) is built only for a policy that needs it, and its
state taken back afterwards. Field operations that need neither stay at the dict,
which is also how they reach records of a class the code does not have (by name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ZODB.broken import Broken

from ..errors import ClassResolutionError, OperationError
from .views import OldState


class StoredInstance:
    """The record of one object: new state, old view, and the object on demand."""

    __slots__ = (
        "_obj",
        "_old",
        "_old_loader",
        "_state",
        "class_name",
        "klass",
        "meta",
        "oid",
        "tid",
    )

    def __init__(self, oid: bytes, tid: bytes, class_name: str, klass: type, meta: Any,
                 state: Any, old_loader: Callable[[], Any]) -> None:
        self.oid = oid
        self.tid = tid
        self.class_name = class_name
        self.klass = klass
        self.meta = meta
        self._state = state
        self._old: OldState | None = None
        self._obj: Any = None
        self._old_loader = old_loader

    @property
    def old(self) -> OldState:
        """The read-only pre-update view (decoded on first attribute read)."""
        if self._old is None:
            self._old = OldState(self.oid, self.class_name, self._old_loader)
        return self._old

    @property
    def fields(self) -> dict[str, Any]:
        """The new state's attributes, for field operations."""
        if self._obj is not None:
            self._state = self._obj.__getstate__()
            self._obj = None
        state = self._state
        if state is None:
            self._state = state = {}
        if not isinstance(state, dict):
            raise OperationError(
                f"its state is a {type(state).__name__}, not attributes; migrate it with "
                "migrate_instances and a policy that works on the object",
                class_name=self.class_name,
                oid=self.oid,
            )
        return state

    def obj(self) -> Any:
        """The object being migrated: an instance of the current class with the new state."""
        if self._obj is None:
            klass = self.klass
            if issubclass(klass, Broken):
                raise ClassResolutionError(
                    "the class does not import from the current code, and the operation needs "
                    "the object itself (a policy); field operations work on such records by name",
                    class_name=self.class_name, oid=self.oid)
            args = self.meta[1] if isinstance(self.meta, tuple) and self.meta[1] else ()
            obj: Any = klass.__new__(klass, *args)
            if self._state is not None:
                obj.__setstate__(self._state)
            self._obj = obj
            self._state = None
        return self._obj

    @property
    def built(self) -> bool:
        """Whether the object itself was built (a policy needed it)."""
        return self._obj is not None

    def final_state(self) -> Any:
        """The state to store."""
        if self._obj is not None:
            return self._obj.__getstate__()
        return self._state

    def stores(self, name: str) -> bool:
        """Whether the state to store holds ``name`` itself (class defaults aside)."""
        state = self.final_state()
        return isinstance(state, dict) and name in state

    def has_field(self, name: str) -> bool:
        """Whether the object will have ``name``: in its state or as a class default."""
        state = self.final_state()
        if isinstance(state, dict) and name in state:
            return True
        if isinstance(state, tuple) and any(isinstance(s, dict) and name in s for s in state):
            return True
        return hasattr(self.klass, name)
