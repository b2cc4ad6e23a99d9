"""ZODB's record pickles, read and written the way ZODB itself does, one record at a time.

A ZODB record is two pickles sharing one memo: the class metadata, then the state.
ZODB's own reader and writer do this through a connection's cache; the DSU works
on records it read straight from the storage, so it needs the pieces underneath:
the persistent unpickler with a chosen class lookup, and the object writer with a
hook on every persistent reference. Those pieces are private to ZODB; this module
is the one place that uses them.

A record may have to name a class the running code does not have under that name:
a class written back by the name a downgrade asks for, or an inline object of a
class that no longer imports (a *leftover*, decoded as a ZODB ``Broken`` object).
Python's C pickler refuses both (it checks that a class imports as itself), so a
record holding one is written by a pure-Python pickler that writes such a class's
``GLOBAL`` by name and a leftover exactly as it was stored: its class, its
arguments and its state. Records without them keep the C pickler's speed.
"""

from __future__ import annotations

import copyreg
import pickle
from collections.abc import Callable
from io import BytesIO
from typing import Any

from persistent import Persistent
from ZODB._compat import PersistentUnpickler, Pickler, _protocol
from ZODB._compat import Unpickler as _Unpickler
from ZODB.broken import Broken
from ZODB.serialize import ObjectWriter


def decode(data: bytes, find_global: Callable[[str, str], Any],
           persistent_load: Callable[[Any], Any]) -> tuple[Any, Any]:
    """(class metadata, state) of a record, classes looked up with ``find_global``."""
    unpickler = PersistentUnpickler(find_global, persistent_load, BytesIO(data))
    classmeta = unpickler.load()
    return classmeta, unpickler.load()


class RecordReader:
    """Decodes records one after another with one of ZODB's unpicklers, so that each record
    does not pay for making one (what :func:`decode` does for a single record)."""

    def __init__(self, find_global: Callable[[str, str], Any],
                 persistent_load: Callable[[Any], Any]) -> None:
        self._find_global = find_global
        self._persistent_load = persistent_load
        self._busy = False
        self._feed = _Feed()
        self._unpickler = PersistentUnpickler(find_global, persistent_load, self._feed)

    def decode(self, data: bytes) -> tuple[Any, Any]:
        """(class metadata, state) of a record."""
        if self._busy:  # decoding a record leads to decoding another: a fresh unpickler
            return decode(data, self._find_global, self._persistent_load)
        self._busy = True
        unpickler = self._unpickler
        self._feed.start(data)
        try:
            return unpickler.load(), unpickler.load()
        except BaseException:  # it may be left part-way through the record
            self._feed = _Feed()
            self._unpickler = PersistentUnpickler(self._find_global, self._persistent_load,
                                                  self._feed)
            raise
        finally:
            unpickler.memo.clear()  # holds the record's objects otherwise
            self._busy = False


class _Feed:
    """Records as the file an unpickler reads, one after another.

    The C unpickler reads a ``BytesIO`` with a call per opcode; a file that can
    ``peek`` is read a buffer at a time, here the whole record at once: a small
    record decodes about twice as fast.
    """

    __slots__ = ("data", "position")

    def __init__(self) -> None:
        self.data = b""
        self.position = 0

    def start(self, data: bytes) -> None:
        """Read ``data`` from its beginning next."""
        self.data = data
        self.position = 0

    def peek(self, size: int = 0) -> bytes:
        return self.data[self.position:]

    def read(self, size: int = -1) -> bytes:
        start = self.position
        end = len(self.data) if size < 0 else min(start + size, len(self.data))
        self.position = end
        return self.data[start:end]

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self.read(len(view))
        view[:len(chunk)] = chunk
        return len(chunk)

    def readline(self) -> bytes:
        start = self.position
        end = self.data.find(b"\n", start)
        end = len(self.data) if end < 0 else end + 1
        self.position = end
        return self.data[start:end]


_PLAIN = frozenset({str, int, float, bool, bytes, list, dict, tuple, set, type(None)})
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})

#: a class's (module, name) as a record names it
Name = tuple[str, str]


def is_leftover(obj: Any) -> bool:
    """Whether ``obj`` is an inline object whose class did not import when it was decoded."""
    return isinstance(obj, Broken) and not isinstance(obj, Persistent)


def leftover_reduce(obj: Any) -> tuple[Any, ...]:
    """How a leftover was built when it was stored, to write it back the same way.

    ZODB's ``Broken`` keeps what unpickling gave it: the arguments of the class
    call (``REDUCE``) or of ``__new__`` (``NEWOBJ``), and the state (``BUILD``).
    """
    fields = obj.__dict__
    state = fields.get("__Broken_state__")
    initargs = fields.get("__Broken_initargs__")
    if initargs is not None:
        return type(obj), tuple(initargs), state
    newobj = copyreg.__newobj__  # type: ignore[attr-defined]
    return newobj, (type(obj), *fields.get("__Broken_newargs__", ())), state


#: Python's own pickler, which (unlike the C one) lets a subclass write any class by name
_PythonPickler: Any = pickle._Pickler


def _by_hand() -> pickle.PicklingError:
    """Raised inside the C pickler: the record is to be written by the Python one."""
    return pickle.PicklingError("this record names a class by name or holds a leftover")


class RecordWriter(ObjectWriter):
    """ZODB's ObjectWriter, bound to a connection, for states that are not objects.

    New persistent objects reached from a written state are added to the connection,
    so they are stored with its transaction. Subclasses see every value that may be
    a persistent reference (:meth:`check_value`), every reference's class
    (:meth:`reference_class`), and say which classes are written by name
    (:meth:`class_name`).
    """

    def __init__(self, connection: Any) -> None:
        super().__init__()
        self._jar = connection
        #: per class: its pickled metadata, and the memo that pickle left
        self._metas: dict[Any, tuple[bytes, dict[int, Any]]] = {}
        self._plain_pickler: tuple[Any, BytesIO] | None = None
        self._by_hand = False  # the Python pickler is writing: names and leftovers are fine
        self._seeded: Any = None  # the record's class, which the C pickler's memo holds
        #: what a subclass counts while writing (put back when a record is written again)
        self.counted = 0

    def check_value(self, obj: Any) -> None:
        """Called for each non-plain value written; may raise to refuse it."""

    def reference_class(self, oid: bytes, klass: type) -> type | Name:
        """The class a persistent reference to ``oid``, an object of ``klass``, names.

        A ``(module, name)`` pair writes the reference by name, the form ZODB reads
        for classes that no longer import.
        """
        return klass

    def class_name(self, klass: type) -> Name | None:
        """The name to write ``klass`` under when pickle would not find it by its own
        (a class kept by name); None writes it as pickle does."""
        return None

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) in _PLAIN:  # most of a state: skip ZODB's checks
            return None
        if not self._by_hand:
            if isinstance(obj, type):
                if obj is not self._seeded and self.class_name(obj) is not None:
                    raise _by_hand()
            elif is_leftover(obj):
                raise _by_hand()
        self.check_value(obj)
        if getattr(obj, "_p_oid", 0) is None and not isinstance(obj, type):
            self._jar.add(obj)
        pid = super().persistent_id(obj)
        if type(pid) is not tuple or not isinstance(pid[1], type):
            return pid
        klass = self.reference_class(pid[0], pid[1])
        return pid if klass is pid[1] else (pid[0], klass)

    def dump(self, classmeta: Any, state: Any, *, name: Name | None = None) -> bytes:
        """The record for ``classmeta`` and ``state``, byte for byte as ZODB writes it.

        ``name`` writes the record's class under that name rather than as pickle
        would (the name the record is to have, which need not import).
        """
        klass = classmeta[0] if type(classmeta) is tuple else classmeta
        mark = self.counted
        try:
            if name is None:
                return self._dump_fast(classmeta, state)
            if type(classmeta) is not tuple:
                return self._dump_named(klass, name, state)
        except pickle.PicklingError:  # a name or a leftover; or an error the Python one meets too
            self.counted = mark
        return self._dump_by_hand(classmeta, state, klass if name else None, name)

    def _dump_fast(self, classmeta: Any, state: Any) -> bytes:
        if not is_plain(state):
            return self._dump(classmeta, state)
        # A state of plain values has no persistent references: it is pickled
        # without asking persistent_id about every value, the costliest part of
        # writing a record. Its memo starts where the class metadata's left off, so
        # the record is byte for byte the one ZODB writes.
        # a class, or (class, None): the same bytes every time; new-args may vary
        cacheable = type(classmeta) is not tuple or classmeta[1] is None
        found = self._metas.get(classmeta) if cacheable else None
        if found is None:
            file, pickler = self._file, self._p
            file.seek(0)
            pickler.clear_memo()
            pickler.dump(classmeta)
            file.truncate()
            found = (file.getvalue(), pickler.memo.copy())
            if cacheable:
                self._metas[classmeta] = found
        meta, memo = found
        return meta + self._dump_plain(state, memo)

    def _dump_plain(self, state: Any, memo: dict[int, Any]) -> bytes:
        if self._plain_pickler is None:
            plain_file = BytesIO()
            self._plain_pickler = (Pickler(plain_file, _protocol), plain_file)
        plain, plain_file = self._plain_pickler
        plain_file.seek(0)
        plain.memo = memo
        plain.dump(state)
        plain_file.truncate()
        return plain_file.getvalue()

    def _dump_named(self, klass: type, name: Name, state: Any) -> bytes:
        """A record whose class is written by ``name``; the state by the C pickler when it can."""
        key = (klass, name)
        found = self._metas.get(key)
        if found is None:
            # what pickle writes for a class: the name, memoized as the memo's first entry
            found = self._metas[key] = (
                pickle.PROTO + bytes([_protocol]) + global_opcode(name) + pickle.BINPUT + b"\0"
                + pickle.STOP, {id(klass): (0, klass)})
        meta, memo = found
        if is_plain(state):
            return meta + self._dump_plain(state, memo)
        file, pickler = self._file, self._p
        file.seek(0)
        pickler.memo = memo  # references to the class reuse the meta's entry
        self._seeded = klass
        try:
            pickler.dump(state)
        finally:
            self._seeded = None
        file.truncate()
        return meta + file.getvalue()

    def _dump_by_hand(self, classmeta: Any, state: Any, klass: type | None,
                      name: Name | None) -> bytes:
        """A record the C pickler cannot write, written by the Python one (see the module)."""
        file = BytesIO()
        pickler = _NamingPickler(file, self, klass, name)
        self._by_hand = True
        try:
            pickler.dump(classmeta)
            pickler.dump(state)
        finally:
            self._by_hand = False
        return file.getvalue()


def global_opcode(name: Name) -> bytes:
    """The ``GLOBAL`` opcode naming ``module.name``, as pickle writes it."""
    module, qualname = name
    return pickle.GLOBAL + module.encode("utf-8") + b"\n" + qualname.encode("utf-8") + b"\n"


class _NamingPickler(_PythonPickler):
    """Python's own pickler, writing classes kept by name and leftovers as they were stored."""

    def __init__(self, file: BytesIO, writer: RecordWriter, record_class: type | None,
                 record_name: Name | None) -> None:
        super().__init__(file, _protocol)
        self._writer = writer
        self._record_class = record_class
        self._record_name = record_name

    def persistent_id(self, obj: Any) -> Any:
        return self._writer.persistent_id(obj)

    def reducer_override(self, obj: Any) -> Any:
        if is_leftover(obj):
            return leftover_reduce(obj)
        return NotImplemented

    def save_global(self, obj: Any, name: str | None = None) -> None:
        named: Name | None = None
        if obj is self._record_class:
            named = self._record_name
        elif isinstance(obj, type):
            named = self._writer.class_name(obj)
        if named is None:
            super().save_global(obj, name)
            return
        self.write(global_opcode(named))
        self.memoize(obj)


class GlobalRenamer:
    """Renames classes in a record's bytes: each ``GLOBAL`` opcode naming an old class is
    rewritten to name the new one, and nothing else changes.

    A class a record names -- its own, in the class metadata, and those of the objects
    its references point at or it holds inline -- is written once per record as a
    ``GLOBAL`` opcode (``c module\\n name\\n``) and memoized, so renaming the class
    is replacing those bytes: the record is then byte for byte what decoding it,
    renaming and encoding it again writes, without either. :meth:`rename` does it only
    where it can show that every place holding the old name is such an opcode and not
    string data, and that no other form of the name is there (a reference by name, an
    ``INST`` or ``STACK_GLOBAL`` opcode, a copyreg extension code); otherwise it
    answers None and the caller decodes the record.
    """

    def __init__(self, renames: dict[Name, Name]) -> None:
        sources, targets = set(renames), set(renames.values())
        #: renaming in bytes is exact only when no target is renamed too (a swap) and no
        #: old name is a copyreg extension (written as a code, not a name)
        self.usable = bool(renames) and not sources & targets and not any(
            name in copyreg._extension_registry for name in sources)  # type: ignore[attr-defined]
        self._renames = [(source, _key(source), b"c" + _key(target), source[1].encode("utf-8"),
                          _string_forms(source[1])) for source, target in renames.items()]
        self._targets = [b"c" + _key(target) for target in targets]
        self._one = self._renames[0] if len(self._renames) == 1 else None
        self._feed = _Feed()
        self._lister = _name_lister(self._feed)

    def rename(self, data: bytes) -> tuple[bytes, list[Name]] | None:
        """``data`` with the old names' ``GLOBAL`` opcodes renamed, and the classes the
        record names besides them (as far as it had to be decoded to be sure: a record
        holding no persistent reference is not); None where bytes alone cannot do it."""
        if len(data) < 8 or data[0] != 0x80 or not 2 <= data[1] <= 3 or b"\x93" in data:
            return None  # other protocols; a STACK_GLOBAL could name a class
        if self._one is not None:  # one rename, the name once: most records, fewer steps
            source, key, replacement, name, forms = self._one
            at = data.find(key)
            if (at > 0 and data.find(key, at + 1) < 0 and data[at - 1] == 0x63
                    and self._targets[0] not in data):
                if data.count(name) != 1:  # the name elsewhere too: maybe a reference by name
                    for form in forms:
                        if form in data:
                            return None
                end = at + len(key)
                if at == 3 and data[end:end + 3] == b"q\x00." and data.find(b"Q", end + 3) < 0 \
                        and data.find(b"P", end + 3) < 0:  # see _meta_only
                    return data[:2] + replacement + data[end:], []
                listed = self._names(data)
                if listed is None or listed.count(source) != 1:
                    return None  # undecodable, or the match is string data
                return data[:at - 1] + replacement + data[end:], [n for n in listed if n != source]
        for target in self._targets:
            if target in data:
                return None  # a merge: the re-encoded record memoizes the two as one class
        edits: list[tuple[int, int, bytes]] = []
        counts: dict[Name, int] = {}
        find = data.find
        for source, key, replacement, name, forms in self._renames:
            at = find(key)
            if at < 0:
                continue
            count = 0
            while at >= 0:
                if data[at - 1] != 0x63:  # not preceded by GLOBAL's "c"
                    return None
                edits.append((at - 1, len(key) + 1, replacement))
                count += 1
                at = find(key, at + 1)
            if data.count(name) != count:  # the name elsewhere too: maybe a reference by name
                for form in forms:
                    if form in data:
                        return None
            counts[source] = count
        if not edits:
            return None
        names: list[Name] = []
        first = edits[0]
        if len(edits) > 1 or first[0] != 2 or not _meta_only(data, first[1]):
            listed = self._names(data)
            if listed is None:
                return None
            for source, count in counts.items():
                if listed.count(source) != count:
                    return None  # a match that is not an opcode (string data)
            names = [name for name in listed if name not in counts]
        if len(edits) == 1:
            start, length, replacement = first
            return data[:start] + replacement + data[start + length:], names
        edits.sort()
        parts: list[bytes] = []
        position = 0
        for start, length, replacement in edits:
            if start < position:
                return None
            parts.append(data[position:start])
            parts.append(replacement)
            position = start + length
        parts.append(data[position:])
        return b"".join(parts), names

    def _names(self, data: bytes) -> list[Name] | None:
        """:func:`global_names`, with one unpickler for all the records this renamer reads."""
        lister = self._lister
        self._feed.start(data)
        names: list[Name] = []
        lister.names = names
        try:
            lister.load()
            lister.load()
        except Exception:
            # the unpickler may be left half-way through a record: the next gets a new one
            self._feed = _Feed()
            self._lister = _name_lister(self._feed)
            return None
        finally:
            lister.memo.clear()
        return names


def _key(name: Name) -> bytes:
    return name[0].encode("utf-8") + b"\n" + name[1].encode("utf-8") + b"\n"


def _string_forms(name: str) -> tuple[bytes, ...]:
    """How a class name is written as a string (a reference naming its class by name)."""
    raw = name.encode("utf-8")
    size = len(raw)
    forms = [b"X" + size.to_bytes(4, "little") + raw, b"T" + size.to_bytes(4, "little") + raw,
             b"V" + raw + b"\n", b"S'" + raw + b"'"]
    if size < 256:
        forms += [b"\x8c" + bytes([size]) + raw, b"U" + bytes([size]) + raw]
    return tuple(forms)


def _occurrences(data: bytes, key: bytes) -> list[int]:
    """Every position of ``key`` in ``data``, overlapping ones included."""
    found = []
    at = data.find(key)
    while at >= 0:
        found.append(at)
        at = data.find(key, at + 1)
    return found


def _meta_only(data: bytes, length: int) -> bool:
    """Whether a record whose class metadata is the ``GLOBAL`` at its start (``length``
    bytes) holds no persistent reference: the metadata is that class alone, and its
    state has no byte of the opcodes that load one (``BINPERSID``, ``PERSID``)."""
    end = 2 + length
    return (data[end:end + 3] == b"q\x00." and data.find(b"Q", end + 3) < 0
            and data.find(b"P", end + 3) < 0)


class _Placeholder:
    """What a record's names stand for while they are listed: takes any arguments and state."""

    def __new__(cls, *args: Any, **kw: Any) -> Any:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kw: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _NameLister(_Unpickler):
    """An unpickler that builds nothing the record names: it lists the names instead."""

    names: list[Name]

    def find_class(self, module: str, name: str) -> Any:
        self.names.append((module, name))
        return _Placeholder


def _name_lister(file: Any) -> _NameLister:
    lister = _NameLister(file)
    lister.names = []
    lister.persistent_load = id  # references are not followed
    return lister


def global_names(data: bytes) -> list[Name] | None:
    """The (module, name) of every class or function the record's two pickles look up, in
    order, one per lookup; None when the record does not decode."""
    lister = _name_lister(BytesIO(data))
    try:
        lister.load()
        lister.load()
    except Exception:
        return None
    return lister.names


def fingerprint(value: Any) -> bytes:
    """Bytes that differ when ``value`` differs: a pickle in which persistent objects,
    classes and leftovers stand for themselves (by identity), so none is loaded."""
    file = BytesIO()
    _Fingerprinter(file, _protocol).dump(value)
    return file.getvalue()


class _Fingerprinter(Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if type(obj) in _PLAIN:
            return None
        if isinstance(obj, (Persistent, type)) or is_leftover(obj):
            return id(obj)
        return None


def is_plain(state: Any) -> bool:
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
