"""Inline instances: objects of plain (not persistent) classes stored inside a record.

A persistent object has a record of its own; an object of a class that is not
persistent is pickled into the record of the persistent object that holds it (a
Money in a Product's price), once per holder. The DSU reaches those too: once a
record is decoded, :func:`inline_objects` walks its state, without entering other
persistent objects, and :class:`InlineInstance` gives each object found the
interface operations work on, as :class:`~.instance.StoredInstance` does for a
record.

How an inline object can be changed depends on how its class pickles it (its
*shape*): its fields are its ``__dict__`` (default pickling), its slots
(``__slots__``), or the state a leftover keeps (a class that does not import,
decoded as a ZODB ``Broken`` object and written back as it was). A class with its
own ``__reduce__``, ``__getstate__`` or ``__setstate__`` pickles what it chooses,
so its fields cannot be edited from outside; a policy working on the object can
change it.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Literal

from persistent import Persistent
from ZODB.broken import Broken

from ..errors import ClassResolutionError, OperationError
from .classes import resolve
from .views import OldState

Shape = Literal["dict", "slots", "leftover", "custom"]

#: the hooks by which a class takes its pickling into its own hands
_OWN_PICKLING = ("__reduce__", "__reduce_ex__", "__getstate__", "__setstate__",
                 "__getnewargs__", "__getnewargs_ex__")
_SCALARS = frozenset({str, int, float, bool, bytes, complex, type(None)})
_CONTAINERS = frozenset({dict, list, tuple, set, frozenset})
_NOT_VALUES = (type, Persistent, types.FunctionType, types.BuiltinFunctionType,
               types.MethodType, types.ModuleType)


def may_be_inline(name: str) -> bool:
    """Whether instances of class ``name`` may be stored inline in other records: a class
    that is not persistent, or one the code does not have (nothing tells)."""
    klass = resolve(name)
    return klass is None or not issubclass(klass, Persistent)


def shape_of(klass: type) -> Shape:
    """How instances of ``klass`` are pickled, so how their fields can be changed."""
    if issubclass(klass, Broken):
        return "leftover"
    for hook in _OWN_PICKLING:
        if getattr(klass, hook, None) is not getattr(object, hook, None):
            return "custom"
    return "slots" if slot_names(klass) else "dict"


def slot_names(klass: type) -> tuple[str, ...]:
    """The slots ``klass`` and its bases declare (``__dict__`` and ``__weakref__`` aside)."""
    names: dict[str, None] = {}
    for base in klass.__mro__:
        declared = base.__dict__.get("__slots__", ())
        for name in (declared,) if isinstance(declared, str) else declared:
            if name not in ("__dict__", "__weakref__"):
                names[name] = None
    return tuple(names)


def inline_objects(state: Any, wanted: Callable[[type], bool],
                   shapes: dict[type, Shape]) -> list[Any]:
    """The inline objects of a decoded state whose class ``wanted`` accepts, holders first.

    The walk follows what pickling the state writes: containers, the fields of
    inline objects (as their shape says), a leftover's arguments and state; it
    does not enter persistent objects, which are records of their own. ``shapes``
    caches :func:`shape_of` per class.
    """
    found: list[Any] = []
    seen: set[int] = set()
    stack = [state]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind in _CONTAINERS or isinstance(value, (dict, list, tuple, set, frozenset)):
            if id(value) not in seen:
                seen.add(id(value))
                stack.extend(_items(value))
            continue
        if isinstance(value, _NOT_VALUES) or id(value) in seen:
            continue
        seen.add(id(value))
        if wanted(kind):
            found.append(value)
        shape = shapes.get(kind)
        if shape is None:
            shape = shapes[kind] = shape_of(kind)
        stack.extend(_parts(value, shape))
    return found


def _items(container: Any) -> Iterator[Any]:
    if isinstance(container, dict):
        for key, item in container.items():
            yield key
            yield item
    else:
        yield from container


def _parts(obj: Any, shape: Shape) -> list[Any]:
    """What pickling ``obj`` writes besides its class."""
    if shape == "leftover":
        return list(obj.__dict__.values())
    if shape == "custom":
        try:
            reduced = obj.__reduce_ex__(3)
        except Exception:  # it was unpickled, so it pickles; if not, nothing to walk
            return []
        if not isinstance(reduced, tuple):
            return []
        parts: list[Any] = list(reduced[1:3])
        for items in reduced[3:5]:
            if items is not None:
                parts.extend(items)
        return parts
    parts = list(getattr(obj, "__dict__", {}).values())
    if shape == "slots":
        parts.extend(getattr(obj, name) for name in slot_names(type(obj)) if hasattr(obj, name))
    return parts


class _SlotFields(MutableMapping[str, Any]):
    """The fields of an object with slots (and a ``__dict__``, if it has one too)."""

    def __init__(self, obj: Any, holder: bytes, class_name: str) -> None:
        self._obj = obj
        self._slots = slot_names(type(obj))
        self._holder = holder
        self._class_name = class_name

    def _dict(self) -> dict[str, Any] | None:
        return getattr(self._obj, "__dict__", None)

    def __getitem__(self, name: str) -> Any:
        if name in self._slots:
            try:
                return getattr(self._obj, name)
            except AttributeError:
                raise KeyError(name) from None
        fields = self._dict()
        if fields is None:
            raise KeyError(name)
        return fields[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if name in self._slots:
            object.__setattr__(self._obj, name, value)
            return
        fields = self._dict()
        if fields is None:
            raise OperationError(
                f"its class has slots and no slot {name!r}; declare the slot in the code",
                class_name=self._class_name, oid=self._holder)
        fields[name] = value

    def __delitem__(self, name: str) -> None:
        if name in self._slots:
            try:
                object.__delattr__(self._obj, name)
            except AttributeError:
                raise KeyError(name) from None
            return
        fields = self._dict()
        if fields is None:
            raise KeyError(name)
        del fields[name]

    def __iter__(self) -> Iterator[str]:
        for name in self._slots:
            if hasattr(self._obj, name):
                yield name
        yield from self._dict() or ()

    def __len__(self) -> int:
        return sum(1 for _ in self)


class InlineInstance:
    """One inline object while operations migrate it; ``oid`` is its holder's."""

    __slots__ = ("_obj", "_old", "_snapshot", "class_name", "klass", "oid", "shape")

    def __init__(self, holder: bytes, class_name: str, obj: Any, shape: Shape) -> None:
        self.oid = holder
        self.class_name = class_name
        self.klass = type(obj)
        self.shape = shape
        self._obj = obj
        self._old: OldState | None = None
        self._snapshot = dict(self._state())

    def _state(self) -> MutableMapping[str, Any]:
        """Its fields as far as they can be read, changing nothing."""
        if self.shape == "custom":
            return getattr(self._obj, "__dict__", {})
        if self.shape == "leftover":
            state = self._obj.__dict__.get("__Broken_state__")
            return state if isinstance(state, dict) else {}
        return self.fields

    @property
    def fields(self) -> MutableMapping[str, Any]:
        """Its fields, for field operations."""
        obj = self._obj
        if self.shape == "dict":
            fields: dict[str, Any] = obj.__dict__
            return fields
        if self.shape == "slots":
            return _SlotFields(obj, self.oid, self.class_name)
        if self.shape == "leftover":
            state = obj.__dict__.get("__Broken_state__")
            if state is None:
                state = obj.__dict__["__Broken_state__"] = {}
            if isinstance(state, dict):
                return state
            raise OperationError(
                f"its state is a {type(state).__name__}, not attributes, and its class does "
                "not import", class_name=self.class_name, oid=self.oid)
        raise OperationError(
            "its class pickles it with its own __reduce__, __getstate__ or __setstate__, so "
            "its fields cannot be changed from outside; change it with migrate_instances and a "
            "policy working on the object", class_name=self.class_name, oid=self.oid)

    @property
    def old(self) -> OldState:
        """A read-only view of its fields as they were before this stage's operations."""
        if self._old is None:
            snapshot = self._snapshot
            self._old = OldState(self.oid, self.class_name, lambda: snapshot)
        return self._old

    def obj(self) -> Any:
        """The object itself: a policy changes it in place."""
        if self.shape == "leftover":
            raise ClassResolutionError(
                "the class does not import from the current code, and the operation needs "
                "the object itself (a policy); only field operations reach such objects",
                class_name=self.class_name, oid=self.oid)
        return self._obj

    @property
    def built(self) -> bool:
        return False

    def final_state(self) -> Any:
        """Its fields as they will be stored."""
        return dict(self._state())

    def stores(self, name: str) -> bool:
        """Whether it holds ``name`` itself (class defaults aside)."""
        return name in self._state()

    def has_field(self, name: str) -> bool:
        """Whether it will have ``name``: stored, or as a class default."""
        if self.shape == "custom":
            return hasattr(self._obj, name)
        return name in self._state() or hasattr(self.klass, name)
