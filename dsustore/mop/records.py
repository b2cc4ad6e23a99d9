"""Reading and writing ZODB data records without going through a Connection's cache.

A ZODB record is two pickles sharing one memo: the class metadata, then the state.
The DSU migrates at this level: it decodes the state of a record it has already read
from the storage, changes it, and encodes it again, so that no object of the
migrated class needs to live in a cache. References to other persistent objects
decode into ghosts of a given connection, exactly as ZODB itself loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from persistent import Persistent
from ZODB import broken
from ZODB.utils import get_pickle_metadata

from ..errors import ClassResolutionError
from ..storage.connections import persistent_load
from ..storage.pickles import RecordWriter, decode
from .classes import resolve

Renames = Mapping[tuple[str, str], tuple[str, str]]


def class_key(data: bytes) -> bytes:
    """The bytes that name a record's class (``module\\nname``), read without unpickling.

    ZODB writes the class metadata as a GLOBAL opcode after the protocol header,
    so the name is the two newline-terminated strings that follow it. Other
    (legacy) layouts return the whole class pickle, which still identifies it.
    """
    if data[2:3] == b"c" and data[:1] == b"\x80":
        end = data.find(b"\n", data.find(b"\n", 3) + 1)
        if end > 0:
            return data[3:end]
    return data[: data.find(b".") + 1]


def class_name_of(data: bytes) -> str:
    """Dotted class name of a record (``pkg.module.Class``), read without unpickling."""
    key = class_key(data)
    if key[:1] != b"\x80":
        module, _, name = key.decode("utf-8").partition("\n")
        return f"{module}.{name}"
    module, name = get_pickle_metadata(data)
    return f"{module}.{name}"


def key_of(dotted: str) -> bytes:
    """The :func:`class_key` a record of the class ``dotted`` has."""
    module, _, name = dotted.rpartition(".")
    return f"{module}\n{name}".encode()


class RecordCodec:
    """Decode and encode records of one connection, applying class renames.

    ``renames`` maps old ``(module, name)`` pairs to new ones: a record that still
    names an old class decodes with the new class, both in its own class metadata
    and in the references and inline objects of its state.
    """

    def __init__(self, connection: Any, renames: Renames | None = None, *,
                 removed: set[str] | frozenset[str] = frozenset()) -> None:
        self._connection = connection
        self._renames = dict(renames or {})
        self._factory = connection.db().classFactory
        self._writer = _StateWriter(connection, removed, self._renamed_class)

    def _renamed_class(self, klass: type) -> type:
        """The class a reference to an object of ``klass`` must name after the renames."""
        new = self._renames.get((klass.__module__, klass.__qualname__))
        return self.find_global(*new) if new else klass

    def find_global(self, module: str, name: str) -> Any:
        module, name = self._renames.get((module, name), (module, name))
        return self._factory(self._connection, module, name)

    def decode(self, data: bytes) -> tuple[Any, Any]:
        """(class metadata, state) of a record; references become ghosts."""
        return decode(data, self.find_global, persistent_load(self._connection))

    def take_broken_references(self) -> int:
        """How many references to classes that do not import the last encodes wrote."""
        count, self._writer.broken = self._writer.broken, 0
        return count

    def encode(self, classmeta: Any, state: Any) -> bytes:
        """A record for the class metadata and state, as ZODB's own writer makes it."""
        klass = classmeta[0] if isinstance(classmeta, tuple) else classmeta
        if isinstance(klass, type) and issubclass(klass, broken.Broken):
            raise ClassResolutionError(
                "cannot write an object whose class does not import",
                class_name=f"{klass.__module__}.{klass.__name__}",
            )
        return self._writer.dump(classmeta, state)


def class_of_meta(classmeta: Any) -> type:
    """The class object held by decoded class metadata."""
    return classmeta[0] if isinstance(classmeta, tuple) else classmeta


class _StateWriter(RecordWriter):
    """The record writer of a codec: renamed classes in references, broken ones kept by name.

    References to objects whose class no longer imports keep their class by name,
    the form ZODB still reads, instead of failing to pickle the broken class.
    """

    def __init__(self, connection: Any, removed: set[str] | frozenset[str],
                 renamed: Callable[[type], type]) -> None:
        super().__init__(connection)
        self._removed = removed
        self._renamed = renamed
        self.broken = 0
        self._classes: dict[type, bool] = {}

    def check_value(self, obj: Any) -> None:
        if isinstance(obj, broken.Broken) and not isinstance(obj, Persistent):
            # an inline object of a class the code no longer has: ZODB would write it
            # back as a generic broken object that no later rename can find
            raise ClassResolutionError(
                "the record holds an inline object of this class, which does not import from "
                "the current code; keep the class, or rename_class it in the same patch",
                class_name=f"{type(obj).__module__}.{type(obj).__name__}",
            )

    def reference_class(self, klass: type) -> type | tuple[str, str]:
        klass = self._renamed(klass)
        if self._importable(klass):
            return klass
        if f"{klass.__module__}.{klass.__qualname__}" not in self._removed:
            self.broken += 1  # references to removed classes are checked by reachability
        return klass.__module__, klass.__name__

    def _importable(self, klass: type) -> bool:
        """Whether a reference's class pickles by name (the code still has it under that name)."""
        known = self._classes.get(klass)
        if known is None:
            known = self._classes[klass] = (
                not issubclass(klass, broken.Broken)
                and resolve(f"{klass.__module__}.{klass.__qualname__}") is klass
            )
        return known
