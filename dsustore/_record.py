"""Reading and writing ZODB data records without going through a Connection's cache.

A ZODB record is two pickles sharing one memo: the class metadata, then the state.
The DSU migrates at this level: it decodes the state of a record it has already read
from the storage, changes it, and encodes it again, so that no object of the
migrated class needs to live in a cache. References to other persistent objects
decode into ghosts of a given connection, exactly as ZODB itself loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

from persistent import Persistent
from ZODB import broken
from ZODB._compat import PersistentUnpickler, Pickler, _protocol
from ZODB.serialize import ObjectWriter

from ._classes import resolve
from .errors import ClassResolutionError

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
    from ZODB.utils import get_pickle_metadata

    module, name = get_pickle_metadata(data)
    return f"{module}.{name}"


def key_of(dotted: str) -> bytes:
    """The :func:`class_key` a record of the class ``dotted`` has."""
    module, _, name = dotted.rpartition(".")
    return f"{module}\n{name}".encode("utf-8")


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
        unpickler = PersistentUnpickler(
            self.find_global, self._connection._reader._persistent_load, BytesIO(data)
        )
        classmeta = unpickler.load()
        return classmeta, unpickler.load()

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


_PLAIN = frozenset({str, int, float, bool, bytes, list, dict, tuple, set, type(None)})


class _StateWriter(ObjectWriter):
    """ZODB's ObjectWriter, bound to a connection, for states that are not objects.

    New persistent objects reached from a written state are added to the
    connection, so they are stored with its transaction. References to objects
    whose class no longer imports keep their class by name, the form ZODB still
    reads, instead of failing to pickle the broken class.
    """

    def __init__(self, connection: Any, removed: set[str] | frozenset[str],
                 renamed: Callable[[type], type]) -> None:
        super().__init__()
        self._jar = connection
        self._removed = removed
        self._renamed = renamed
        self.broken = 0
        self._classes: dict[type, bool] = {}
        self._metas: dict[Any, bytes] = {}  # the pickled class metadata, per class

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) in _PLAIN:  # most of a state: skip ZODB's checks
            return None
        if isinstance(obj, broken.Broken) and not isinstance(obj, Persistent):
            # an inline object of a class the code no longer has: ZODB would write it
            # back as a generic broken object that no later rename can find
            raise ClassResolutionError(
                "the record holds an inline object of this class, which does not import from "
                "the current code; keep the class, or rename_class it in the same patch",
                class_name=f"{type(obj).__module__}.{type(obj).__name__}",
            )
        if getattr(obj, "_p_oid", 0) is None and not isinstance(obj, type):
            self._jar.add(obj)
        pid = super().persistent_id(obj)
        if type(pid) is not tuple or not isinstance(pid[1], type):
            return pid
        klass = self._renamed(pid[1])
        if klass is not pid[1]:
            pid = pid[0], klass
        if not self._importable(klass):
            if f"{klass.__module__}.{klass.__qualname__}" not in self._removed:
                self.broken += 1  # references to removed classes are checked by reachability
            return pid[0], (klass.__module__, klass.__name__)
        return pid

    def _importable(self, klass: type) -> bool:
        """Whether a reference's class pickles by name (the code still has it under that name)."""
        known = self._classes.get(klass)
        if known is None:
            known = self._classes[klass] = (
                not issubclass(klass, broken.Broken)
                and resolve(f"{klass.__module__}.{klass.__qualname__}") is klass
            )
        return known

    def dump(self, classmeta: Any, state: Any) -> bytes:
        if not _is_plain(state):
            return self._dump(classmeta, state)
        # A state of plain values has no persistent references: it is pickled
        # without asking persistent_id about every value, the costliest part of
        # writing a record. (Each pickle of a record keeps its own memo entries.)
        # a class, or (class, None): the same bytes every time; new-args may vary
        cacheable = type(classmeta) is not tuple or classmeta[1] is None
        meta = self._metas.get(classmeta) if cacheable else None
        if meta is None:
            file, pickler = self._file, self._p
            file.seek(0)
            pickler.clear_memo()
            pickler.dump(classmeta)
            file.truncate()
            meta = file.getvalue()
            if cacheable:
                self._metas[classmeta] = meta
        plain, plain_file = self._plain
        plain_file.seek(0)
        plain.clear_memo()
        plain.dump(state)
        plain_file.truncate()
        return meta + plain_file.getvalue()

    @property
    def _plain(self) -> tuple[Any, BytesIO]:
        found = self.__dict__.get("_plain_pickler")
        if found is None:
            plain_file = BytesIO()
            found = self.__dict__["_plain_pickler"] = (Pickler(plain_file, _protocol), plain_file)
        return found


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def _is_plain(state: Any) -> bool:
    """Whether a state is a dict of scalars and of lists or tuples of scalars."""
    if type(state) is not dict:
        return False
    scalars = _SCALARS
    for key, value in state.items():
        if type(key) is not str:
            return False
        kind = type(value)
        if kind in scalars:
            continue
        if kind is not list and kind is not tuple:
            return False
        for item in value:
            if type(item) not in scalars:
                return False
    return True
