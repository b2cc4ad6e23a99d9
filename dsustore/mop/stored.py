"""Stored states read without the code: class names, arguments and states, references by oid.

ZODB decodes a record with the classes it names, so reading one needs the code
that wrote it. Tests of migrations, and the schema's record of what is stored,
need the data as it is whatever code is active: :func:`decode_state` unpickles a
record's state with every class it names replaced by a :class:`Stored` stand-in
that keeps the class's dotted name and what the pickle built it from, and every
reference to another persistent object by a :class:`Ref` to its oid. Two decoded
states are equal when the stored data is.
"""

from __future__ import annotations

import builtins
import io
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["Ref", "Stored", "decode_state", "state_fields"]


@dataclass(frozen=True)
class Ref:
    """A reference to another persistent object, by oid (``0x2a``)."""

    oid: str

    def __repr__(self) -> str:
        return f"<ref {self.oid}>"


class Stored:
    """An object of a stored class, as its pickle built it: its class's name, the arguments
    it was made with, its state and items. Equal when all of those are."""

    dotted: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Stored:
        obj = super().__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items=[], entries={})
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: :meth:`__new__` kept the arguments."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def append(self, item: Any) -> None:
        self.__dict__["items"].append(item)

    def extend(self, items: Iterable[Any]) -> None:
        self.__dict__["items"].extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["entries"][key] = value

    def identity(self) -> tuple[Any, ...]:
        """What two stand-ins are compared by: class name, arguments, state, items."""
        found = self.__dict__
        return (type(self).dotted, found["args"], found["kwargs"], found["state"], found["items"],
                found["entries"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stored) and self.identity() == other.identity()

    def __hash__(self) -> int:
        return hash(type(self).dotted)

    def __repr__(self) -> str:
        found = self.__dict__
        parts = [repr(a) for a in found["args"]]
        if found["state"] is not None:
            parts.append(f"state={found['state']!r}")
        return f"{type(self).dotted}({', '.join(parts)})"


#: builtins a record may name that compare by value as they are
_BUILTINS = {name: getattr(builtins, name) for name in ("set", "frozenset", "bytearray", "complex")}
_STORED_CLASSES: dict[str, type[Stored]] = {}


def _stored_class(module: str, name: str) -> Any:
    if module in ("builtins", "__builtin__") and _BUILTINS.get(name) is not None:
        return _BUILTINS[name]
    dotted = f"{module}.{name}"
    cls = _STORED_CLASSES.get(dotted)
    if cls is None:
        cls = _STORED_CLASSES[dotted] = type(name, (Stored,), {"dotted": dotted})
    return cls


class _NeutralUnpickler(pickle.Unpickler):
    """Unpickles a record naming classes without importing them, references as :class:`Ref`."""

    def find_class(self, module: str, name: str) -> Any:
        return _stored_class(module, name)

    def persistent_load(self, pid: Any) -> Ref:
        if isinstance(pid, tuple):
            pid = pid[0]
        elif isinstance(pid, list):  # ['w', (oid,)], ['m', (db, oid, class)], ['n', (db, oid)]
            kind, args = pid[0], pid[1]
            pid = args[0] if kind in ("w", "p") else args[1]
        return Ref(_hex(pid if isinstance(pid, bytes) else b""))


def decode_state(data: bytes) -> Any:
    """The state of a record, with objects of stored classes as :class:`Stored` and
    references as :class:`Ref`: nothing of the application is imported."""
    unpickler = _NeutralUnpickler(io.BytesIO(data))
    unpickler.load()  # the class metadata: the record's class is read by name instead
    return unpickler.load()


def state_fields(state: Any) -> dict[str, Any] | None:
    """The fields of a persistent object's state: its ``__dict__``, with ``__slots__`` values
    (ZODB stores those as ``(dict, slots)``); None for a state of another form."""
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], (dict, type(None))) \
            and isinstance(state[1], dict):
        return {**(state[0] or {}), **state[1]}
    return dict(state) if isinstance(state, dict) else None


def _hex(oid: bytes) -> str:
    return hex(int.from_bytes(oid, "big"))
