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

from ZODB import broken
from ZODB.utils import get_pickle_metadata

from ..storage.connections import persistent_load
from ..storage.pickles import Name, RecordReader, RecordWriter
from .classes import resolve, split_name

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
    """Decode and encode records of one connection, applying class renames by name.

    ``renames`` maps old ``(module, name)`` pairs to new ones: a record that names
    an old class, in its own class metadata or in the references and inline objects
    of its state, is written naming the new one. A new name the code has decodes
    into that class; one it does not have (a downgrade running with the newer code)
    decodes into the old class where the code has that, and is written by name.
    ``prefer_stored`` decodes a stored name the code has into its own class even
    when it is renamed (the old namespace, which shows the objects as they were).
    """

    def __init__(self, connection: Any, renames: Renames | None = None, *,
                 removed: set[str] | frozenset[str] = frozenset(),
                 prefer_stored: bool = False) -> None:
        self._connection = connection
        self._renames = dict(renames or {})
        self._prefer_stored = prefer_stored
        self._factory = connection.db().classFactory
        self._load: Callable[[Any], Any] | None = None  # the connection's, once it decodes
        self._reader = RecordReader(self.find_global, self._persistent_load)
        #: per reference of the record last decoded, the class it named where the
        #: connection's cache holds the object under another (the writer keeps the name)
        self._ref_classes: dict[bytes, type] = {}
        by_source: dict[str, Name] = {}  # renamed to a name the code does not have
        by_class: dict[type, Name] = {}  # renamed to a name the code has for another class
        for (module, name), target in self._renames.items():
            found = resolve(f"{target[0]}.{target[1]}")
            if found is None:
                by_source[f"{module}.{name}"] = target
            elif (found.__module__, found.__qualname__) != target:
                by_class[found] = target
        self._writer = _StateWriter(connection, removed, by_source, by_class,
                                    {f"{m}.{n}" for m, n in self._renames.values()},
                                    self._ref_classes)

    def find_global(self, module: str, name: str) -> Any:
        """The class a record's ``module.name`` decodes into (see the class docstring)."""
        target = self._renames.get((module, name))
        if target is None:
            return self._factory(self._connection, module, name)
        if self._prefer_stored:
            stored = self._factory(self._connection, module, name)
            if not _is_broken(stored):
                return stored
            return self._factory(self._connection, *target)
        found = self._factory(self._connection, *target)
        if not _is_broken(found):
            return found
        stored = self._factory(self._connection, module, name)
        if not _is_broken(stored) and (stored.__module__, stored.__qualname__) == (module, name):
            return stored  # the code's class, written back under the new name
        return found

    def _persistent_load(self, reference: Any) -> Any:
        load = self._load or persistent_load(self._connection)
        if type(reference) is tuple and len(reference) == 2:
            oid, klass = reference
            if type(klass) is tuple:  # a reference by name: renames apply to it too
                klass = self.find_global(*klass)
            obj = load((oid, klass))
            if type(obj) is not klass and isinstance(klass, type):
                self._ref_classes[oid if isinstance(oid, bytes) else oid.encode("ascii")] = klass
            return obj
        return load(reference)

    def decode(self, data: bytes) -> tuple[Any, Any]:
        """(class metadata, state) of a record; references become ghosts."""
        self._ref_classes.clear()
        if self._load is None:
            self._load = persistent_load(self._connection)
        return self._reader.decode(data)

    def written_name(self, klass: type) -> str:
        """The dotted name the records this codec writes give ``klass``."""
        named = self._writer.class_name(klass)
        if named is not None:
            return f"{named[0]}.{named[1]}"
        return f"{klass.__module__}.{klass.__qualname__}"

    def name_to_write(self, classmeta: Any, name: str) -> str | None:
        """``name`` if a record of ``classmeta`` must be given it by name (see :meth:`encode`),
        None when pickling its class writes that very name."""
        klass = class_of_meta(classmeta)
        if not isinstance(klass, type):  # a class kept by name in the metadata already
            return None
        if (self._writer.class_name(klass) is None
                and f"{klass.__module__}.{klass.__qualname__}" == name):
            return None
        return name

    def take_broken_references(self) -> int:
        """How many references to classes that do not import the last encodes wrote."""
        count, self._writer.counted = self._writer.counted, 0
        return count

    def encode(self, classmeta: Any, state: Any, *, name: str | None = None) -> bytes:
        """A record for the class metadata and state, as ZODB's own writer makes it.

        ``name``, the dotted name the record's class is to have, is written as it is,
        whether or not the code has a class of that name.
        """
        return self._writer.dump(classmeta, state, name=split_name(name) if name else None)


def _is_broken(found: Any) -> bool:
    return isinstance(found, type) and issubclass(found, broken.Broken)


def class_of_meta(classmeta: Any) -> type:
    """The class object held by decoded class metadata."""
    return classmeta[0] if isinstance(classmeta, tuple) else classmeta


class _StateWriter(RecordWriter):
    """The record writer of a codec: renamed classes by name, leftovers as they were.

    Classes renamed to a name the code lacks, and classes that do not import (a
    leftover's, a reference's), are written by name; references to objects whose
    class does not import are counted (``counted``: a system validation reports
    them) unless a rename or removal in the patch put them there on purpose.
    """

    def __init__(self, connection: Any, removed: set[str] | frozenset[str],
                 by_source: dict[str, Name], by_class: dict[type, Name], targets: set[str],
                 ref_classes: dict[bytes, type]) -> None:
        super().__init__(connection)
        self._removed = removed
        self._by_source = by_source
        self._by_class = by_class
        self._targets = targets
        self._ref_classes = ref_classes
        self._classes: dict[type, bool] = {}
        self._names: dict[type, Name | None] = {}

    def class_name(self, klass: type) -> Name | None:
        try:
            return self._names[klass]
        except KeyError:
            pass
        own = f"{klass.__module__}.{klass.__qualname__}"
        named = self._by_source.get(own) or self._by_class.get(klass)
        if named is None and issubclass(klass, broken.Broken):
            named = (klass.__module__, klass.__name__)
        self._names[klass] = named
        return named

    def reference_class(self, oid: bytes, klass: type) -> type | Name:
        klass = self._ref_classes.get(oid, klass)
        named = self.class_name(klass)
        by_tuple = False
        if named is None:
            if self._importable(klass):
                return klass
            # a class that is neither the code's nor broken (made at run time): by name
            named, by_tuple = (klass.__module__, klass.__name__), True
        dotted = f"{named[0]}.{named[1]}"
        if dotted not in self._targets and dotted not in self._removed:
            self.counted += 1  # references to removed classes are checked by reachability
        return named if by_tuple else klass

    def _importable(self, klass: type) -> bool:
        """Whether a reference's class pickles by name (the code still has it under that name)."""
        known = self._classes.get(klass)
        if known is None:
            known = self._classes[klass] = (
                not issubclass(klass, broken.Broken)
                and resolve(f"{klass.__module__}.{klass.__qualname__}") is klass
            )
        return known
