"""The read-only view of an object's pre-update state handed to migration policies.

The old class may no longer exist in the code, so the old object is not rebuilt:
its stored attributes are decoded on first use (references resolve into the old
namespace), and writing to it raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..errors import ReadOnlyStateError, format_oid


def state_dict(state: Any) -> dict[str, Any]:
    """The attributes of a stored state: a dict, or ``(dict, slots)`` for slotted classes."""
    if isinstance(state, dict):
        return state
    if isinstance(state, tuple) and len(state) == 2 and all(
        s is None or isinstance(s, dict) for s in state
    ):
        merged: dict[str, Any] = dict(state[0] or {})
        merged.update(state[1] or {})
        return merged
    return {}


class OldState:
    """An object as it was stored before the update: attribute reads only."""

    __slots__ = ("_class_name", "_fields", "_load", "_oid")

    def __init__(self, oid: bytes, class_name: str, load: Callable[[], Any]) -> None:
        object.__setattr__(self, "_oid", oid)
        object.__setattr__(self, "_class_name", class_name)
        object.__setattr__(self, "_load", load)
        object.__setattr__(self, "_fields", None)

    def _state(self) -> dict[str, Any]:
        fields = self._fields
        if fields is None:
            fields = state_dict(self._load())
            object.__setattr__(self, "_fields", fields)
        return fields

    @property
    def _p_oid(self) -> bytes:
        return self._oid

    @property
    def class_name(self) -> str:
        """Dotted name of the class the object was stored with."""
        return self._class_name

    def __getattr__(self, name: str) -> Any:
        try:
            return self._state()[name]
        except KeyError:
            raise AttributeError(
                f"{self._class_name} object {format_oid(self._oid)} had no field {name!r} "
                "before the update"
            ) from None

    def __getitem__(self, name: str) -> Any:
        return self._state()[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._state().get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self._state()

    def __iter__(self) -> Iterator[str]:
        return iter(self._state())

    def fields(self) -> dict[str, Any]:
        """A copy of every stored attribute."""
        return dict(self._state())

    def __setattr__(self, name: str, value: Any) -> None:
        raise ReadOnlyStateError(
            f"cannot set {name!r}: the old object is read-only, write to the new one",
            class_name=self._class_name,
            oid=self._oid,
        )

    def __delattr__(self, name: str) -> None:
        raise ReadOnlyStateError(
            f"cannot delete {name!r}: the old object is read-only",
            class_name=self._class_name,
            oid=self._oid,
        )

    def __repr__(self) -> str:
        return f"<old {self._class_name} {format_oid(self._oid)}>"
