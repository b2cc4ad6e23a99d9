"""ZODB's record pickles, read and written the way ZODB itself does, one record at a time.

A ZODB record is two pickles sharing one memo: the class metadata, then the state.
ZODB's own reader and writer do this through a connection's cache; the DSU works
on records it read straight from the storage, so it needs the pieces underneath:
the persistent unpickler with a chosen class lookup, and the object writer with a
hook on every persistent reference. Those pieces are private to ZODB; this module
is the one place that uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from ZODB._compat import PersistentUnpickler, Pickler, _protocol
from ZODB.serialize import ObjectWriter


def decode(data: bytes, find_global: Callable[[str, str], Any],
           persistent_load: Callable[[Any], Any]) -> tuple[Any, Any]:
    """(class metadata, state) of a record, classes looked up with ``find_global``."""
    unpickler = PersistentUnpickler(find_global, persistent_load, BytesIO(data))
    classmeta = unpickler.load()
    return classmeta, unpickler.load()


_PLAIN = frozenset({str, int, float, bool, bytes, list, dict, tuple, set, type(None)})
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


class RecordWriter(ObjectWriter):
    """ZODB's ObjectWriter, bound to a connection, for states that are not objects.

    New persistent objects reached from a written state are added to the connection,
    so they are stored with its transaction. Subclasses see every value that may be
    a persistent reference (:meth:`check_value`) and every reference's class
    (:meth:`reference_class`).
    """

    def __init__(self, connection: Any) -> None:
        super().__init__()
        self._jar = connection
        self._metas: dict[Any, bytes] = {}  # the pickled class metadata, per class
        self._plain_pickler: tuple[Any, BytesIO] | None = None

    def check_value(self, obj: Any) -> None:
        """Called for each non-plain value written; may raise to refuse it."""

    def reference_class(self, klass: type) -> type | tuple[str, str]:
        """The class a persistent reference to an object of ``klass`` names.

        A ``(module, name)`` pair writes the reference by name, the form ZODB reads
        for classes that no longer import.
        """
        return klass

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) in _PLAIN:  # most of a state: skip ZODB's checks
            return None
        self.check_value(obj)
        if getattr(obj, "_p_oid", 0) is None and not isinstance(obj, type):
            self._jar.add(obj)
        pid = super().persistent_id(obj)
        if type(pid) is not tuple or not isinstance(pid[1], type):
            return pid
        klass = self.reference_class(pid[1])
        return pid if klass is pid[1] else (pid[0], klass)

    def dump(self, classmeta: Any, state: Any) -> bytes:
        """The record for ``classmeta`` and ``state``, byte for byte as ZODB writes it."""
        if not is_plain(state):
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
        if self._plain_pickler is None:
            plain_file = BytesIO()
            self._plain_pickler = (Pickler(plain_file, _protocol), plain_file)
        plain, plain_file = self._plain_pickler
        plain_file.seek(0)
        plain.clear_memo()
        plain.dump(state)
        plain_file.truncate()
        return meta + plain_file.getvalue()


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
