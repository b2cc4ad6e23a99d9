"""The meta-object protocol the DSU is built on (paper, Figure 3), over ZODB.

========================  ===========================================================
paper                     here
========================  ===========================================================
readClassDefinition       :func:`read_class_definition`: module, name, bases, fields
createClass               :func:`create_class`: a class from a definition
readInstanceVariable      :func:`read_instance_variable`: a field of the stored state
writeInstanceVariable     :func:`write_instance_variable`: recorded in the transaction
allInstances              :func:`all_instances`: a storage scan, subclasses included
cloneNamespace            :func:`clone_namespace`: a private connection (ZODB MVCC)
replaceNamespace          :func:`replace_namespace`: commit, then swap live objects
swapObjects               :func:`swap_objects`: identity-preserving class/state swap
========================  ===========================================================
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import ModuleType
from typing import Any, cast

import transaction as transaction_module

from ..storage import adapter_for
from ..storage.connections import cache_of
from .classes import ClassDef, ClassRef, create_class, dotted_name, read_class_definition, resolve
from .namespace import Namespace
from .records import class_key, class_name_of, key_of
from .swap import swap_live_objects, swap_objects
from .views import OldState

__all__ = [
    "ClassDef",
    "read_class_definition",
    "create_class",
    "read_instance_variable",
    "write_instance_variable",
    "all_instances",
    "instance_oids",
    "class_counts",
    "named_classes",
    "clone_namespace",
    "replace_namespace",
    "swap_objects",
]

_MISSING: Any = object()


def read_instance_variable(instance: Any, name: str, default: Any = _MISSING) -> Any:
    """The stored value of field ``name``, bypassing properties and methods of the class."""
    if isinstance(instance, OldState):
        return instance[name] if default is _MISSING else instance.get(name, default)
    activate = getattr(instance, "_p_activate", None)
    if activate is not None:
        activate()
    fields = getattr(instance, "__dict__", {})
    if name in fields:
        return fields[name]
    if default is not _MISSING:
        return default
    raise AttributeError(f"{type(instance).__qualname__} object has no stored field {name!r}")


def write_instance_variable(instance: Any, name: str, value: Any) -> None:
    """Set the stored value of field ``name``; a persistent object is marked changed."""
    if isinstance(instance, OldState):
        setattr(instance, name, value)  # raises: the old state is read-only
    activate = getattr(instance, "_p_activate", None)
    if activate is not None:
        activate()
    instance.__dict__[name] = value
    if hasattr(instance, "_p_changed"):
        instance._p_changed = True


def _matcher(cls: ClassRef, subclasses: bool) -> Callable[[bytes], type | bool]:
    target = dotted_name(cls)
    base = cls if isinstance(cls, type) else resolve(target)
    decided: dict[bytes, type | bool] = {}

    def klass_for(data: bytes) -> type | bool:
        """The class to build ghosts with (True: it does not import), False for records that
        do not match."""
        key = class_key(data)
        found = decided.get(key)
        if found is None:
            name = class_name_of(data)
            klass = resolve(name)
            hit = name == target or (
                subclasses and klass is not None and base is not None and issubclass(klass, base))
            found = decided[key] = (klass if klass is not None else True) if hit else False
        return found

    return klass_for


def instance_oids(storage: Any, cls: ClassRef, *, at: bytes | None = None,
                  subclasses: bool = True, view: Any = None) -> Iterator[bytes]:
    """Oids of the stored instances of ``cls``, read from record headers only.

    ``view``, a connection seeing the database as of ``at``, makes the scan exact
    on a history-free RelStorage (see :meth:`dsustore.storage.StorageAdapter.current_records`).
    """
    klass_for = _matcher(cls, subclasses)
    for oid, _tid, data in adapter_for(storage).current_records(at=at, view=view):
        if klass_for(data) is not False:
            yield oid


def all_instances(conn: Any, cls: ClassRef, *, subclasses: bool = True) -> Iterator[Any]:
    """Every stored instance of ``cls`` (and its subclasses) as this connection sees it.

    Found by a storage scan that reads each record's class without unpickling its
    state; each instance is handed out as a ghost of ``conn``, loaded only when used,
    so memory does not grow with the number of instances.
    """
    klass_for = _matcher(cls, subclasses)
    cache = cache_of(conn)
    adapter = adapter_for(conn.db())
    for oid, _tid, data in adapter.current_records(at=adapter.snapshot_tid(conn), view=conn):
        klass = klass_for(data)
        if klass is False:
            continue
        obj = cache.get(oid)
        if obj is None:
            if isinstance(klass, type) and data[2:3] == b"c":
                obj = cast(Any, klass).__new__(klass)  # a ghost: no __init__, no state
                cache.new_ghost(oid, obj)
            else:
                obj = conn.get(oid)
        yield obj


def class_counts(storage: Any, *, at: bytes | None = None, view: Any = None) -> Counter[str]:
    """How many stored objects each class has (dotted name → count)."""
    by_key: Counter[bytes] = Counter()
    names: dict[bytes, str] = {}
    for _oid, _tid, data in adapter_for(storage).current_records(at=at, view=view):
        key = class_key(data)
        if key not in names:
            names[key] = class_name_of(data)
        by_key[key] += 1
    counts: Counter[str] = Counter()
    for key, count in by_key.items():
        counts[names[key]] += count
    return counts


def named_classes(storage: Any, names: Iterable[str] = (), *, at: bytes | None = None,
                  view: Any = None) -> Counter[str]:
    """How many records hold each class (as :func:`class_counts`), and for each of ``names``
    how many records name it besides: in a reference, or as an object stored inline."""
    needles = {name: b"c" + key_of(name) + b"\n" for name in names}
    by_key: Counter[bytes] = Counter()
    keys: dict[bytes, str] = {}
    named: Counter[str] = Counter()
    for _oid, _tid, data in adapter_for(storage).current_records(at=at, view=view):
        key = class_key(data)
        if key not in keys:
            keys[key] = class_name_of(data)
        by_key[key] += 1
        for name, needle in needles.items():
            if data.find(needle, len(key) + 3) >= 0:  # past the record's own class
                named[name] += 1
    counts: Counter[str] = Counter()
    for key, count in by_key.items():
        counts[keys[key]] += count
    return counts + named


def clone_namespace(db: Any, *, transaction_manager: Any = None) -> Namespace:
    """A private, transactional copy of the database's object graph (paper: cloneNamespace).

    It is a connection of its own: ZODB's MVCC keeps other connections on the old
    state until :func:`replace_namespace` commits it.
    """
    tm = transaction_manager or transaction_module.TransactionManager(explicit=True)
    tm.begin()
    conn = db.open(transaction_manager=tm)
    return Namespace(conn, tid=adapter_for(db).snapshot_tid(conn), historical=False)


def replace_namespace(namespace: Namespace, *,
                      modules: Mapping[str, ModuleType] | None = None) -> bytes | None:
    """Make a cloned namespace the current one (paper: replaceNamespace).

    Commits its transaction, so every other connection sees the new state at its
    next transaction, and swaps objects they hold to the classes of the new code.
    ``modules`` replaces entries of ``sys.modules`` first, for code loaded anew.
    """
    if modules:
        sys.modules.update(modules)
    conn = namespace.connection
    conn.transaction_manager.commit()
    tid = adapter_for(conn.db()).committed_tid(conn)
    swap_live_objects(conn.db())
    return tid
