"""The migration pass: one streaming walk over the stored records, applying operations.

The pass reads every current record once, straight from the storage, and decides
from the class named in the record's first bytes whether any operation applies (or,
when the stage needs it, from a class name found in its bytes: a renamed class, one
stored inline). Only those records are decoded, migrated as plain state -- the
record's own object and the objects stored inline in it --, encoded and, when
something in them changed, written into the patch connection's savepoint storage, a
temporary file the connection copies into the storage when the transaction commits.
A record that only renames change is not even decoded: the class names are rewritten
in its bytes, where :class:`~dsustore.storage.pickles.GlobalRenamer` can show that is
exact (:meth:`MigrationPass._rename_in_bytes`).
Nothing is committed here, the running application keeps using the old state, and
memory holds one record at a time plus the storage's own per-transaction index.
Once the walk is done, and before anything commits, the pass refuses operations on
classes that exist nowhere, renames that would merge unasked, and inline objects an
operation could not change (:meth:`MigrationPass._check_operations`).

Objects a policy changes through the new namespace are ordinary connection changes;
they are flushed into the same savepoint storage at batch ends, and a record the
pass reaches after a policy changed it is migrated from that newer state.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from persistent import Persistent
from ZODB.broken import Broken
from ZODB.POSException import ConflictError, POSKeyError
from ZODB.serialize import ObjectReader, referencesf
from ZODB.utils import z64

from ..errors import (
    ClassResolutionError,
    DSUError,
    OperationError,
    PolicyError,
    ReadOnlyStateError,
    ValidationError,
)
from ..mop.classes import resolve, split_name
from ..mop.inline import InlineInstance, Shape, inline_objects, may_be_inline, shape_of
from ..mop.instance import StoredInstance
from ..mop.records import RecordCodec, class_key, class_name_of, class_of_meta, key_of
from ..operations.ops import Context, Operation, RemoveClass, RenameClass, matches
from ..operations.validations import SystemValidation, Validation
from ..storage import StorageAdapter
from ..storage.connections import (
    cache_of,
    flush_changes,
    reader_of,
    registered_objects,
    savepoint_store,
    set_reader,
)
from ..storage.pickles import GlobalRenamer, fingerprint, is_plain
from ..storage.savepoints import FrozenStore
from ..storage.spool import ScanSpool
from .checks import check_classes
from .pacing import EVERY
from .reports import Progress

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What the pass did and found, for the report and the system validations."""

    scanned: int = 0
    #: objects changed, per class: records and inline objects
    migrated: Counter[str] = field(default_factory=Counter)
    #: objects an operation applied to and left as they were (they had the shape), per class
    unchanged: Counter[str] = field(default_factory=Counter)
    #: records rewritten because they name a renamed class (references, inline objects)
    references_rewritten: int = 0
    #: records the stage wrote, whatever the reason
    records_rewritten: int = 0
    removed_instances: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    #: records holding inline instances of a removed class, per class
    removed_inline: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    promise_failures: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    broken_references: list[bytes] = field(default_factory=list)
    unreferenced: Counter[str] = field(default_factory=Counter)
    #: inline instances an operation cannot change: (operation, class, why) -> how many
    unreachable: Counter[tuple[str, str, str]] = field(default_factory=Counter)


@dataclass
class _Plan:
    stored_name: str
    new_name: str
    klass: type | None
    ops: list[Operation] | None
    removed: bool
    #: whether its records are written under another name (a rename)
    renamed: bool = False
    #: the class is a rename's target and already stored (a merge nobody asked for)
    merging: bool = False
    #: the name records are written under when pickling their class would not write it
    #: (decided at the first record: see RecordCodec.name_to_write)
    write_as: str | None = None
    decided: bool = False
    #: whether an operation may read a record's old view
    reads_old: bool = False


@dataclass
class _Inline:
    """What the pass does to inline objects of one class (decided once per class)."""

    name: str  # the name it is written under
    ops: list[Operation]
    shape: Shape
    removed: bool
    #: written under a rename's new name; ``own``: decoded into that class, so it may
    #: also have been stored under it (in a merge)
    renamed: bool
    own: bool

    @property
    def wanted(self) -> bool:
        return bool(self.ops) or self.removed or self.renamed


# what a needle found in a record asks for
_REWRITE = 1  # the record names a renamed class: encode it again
_INLINE = 2  # it may hold inline instances operations apply to
_REMOVED = 4  # it may hold inline instances of a removed class
_RENAMED = 8  # it may hold inline instances of a renamed class (count them)
_WALK = _INLINE | _REMOVED | _RENAMED
_DECODE = _REWRITE | _WALK


class MigrationPass(Context):
    """Runs the per-instance operations of one patch stage over the whole database.

    A patch in several stages runs one pass per stage, all in the same transaction:
    a later stage reads each record as the earlier stages left it in the savepoint
    storage (``frozen``, the store as it was when the stage began), and its old
    namespace shows that state too.

    Besides the record classes, the pass looks for a few names in the records'
    bytes (*needles*, only when the stage needs them): classes it renames, classes
    whose instances may be stored inline, classes it removes, and classes it names
    that the code lacks. A record holding one is decoded; inline objects are
    reached by walking its state.
    """

    def __init__(self, *, adapter: StorageAdapter, connection: Any, old_connection: Any, at: bytes,
                 old_ns: Any, new_ns: Any, operations: list[Operation], batch_size: int,
                 progress: Callable[[Progress], None] | None, frozen: FrozenStore | None = None,
                 label: str | None = None, old_renames: dict[tuple[str, str], tuple[str, str]]
                 | None = None, spool: ScanSpool | None = None,
                 pace: Callable[[], None] | None = None) -> None:
        self.adapter = adapter
        self.pace = pace
        self.conn = connection
        self.old_conn = old_connection
        self.at = at
        self.old_ns = old_ns
        self.new_ns = new_ns
        self.batch_size = batch_size
        self.progress = progress
        self.frozen = frozen
        self.spool = spool
        self.phase = f"migrate {label}" if label else "migrate"
        self.all_operations = list(operations)
        self.operations = [op for op in operations if op.per_instance]
        renames = [op for op in operations if isinstance(op, RenameClass)]
        self.renames = {split_name(op.old_name): split_name(op.new_name) for op in renames}
        self._sources = {op.old_name for op in renames}
        self._targets = {op.new_name for op in renames}
        self._sources_of: dict[str, set[str]] = defaultdict(set)
        for op in renames:
            self._sources_of[op.new_name].add(op.old_name)
        #: rename targets whose stored instances would be merged without being asked to
        self._unasked_merges = {op.new_name for op in renames
                                if not op.merge and op.new_name not in self._sources}
        self.removed = {op.class_name for op in operations if isinstance(op, RemoveClass)}
        self.codec = RecordCodec(connection, self.renames, removed=self.removed)
        self._renamer = GlobalRenamer(self.renames)
        #: per class name a record holds: whether it imports (see _rename_in_bytes)
        self._importable: dict[tuple[str, str], bool] = {}
        self.old_codec = RecordCodec(old_connection, {**(old_renames or {}), **self.renames},
                                     prefer_stored=True)
        self._plain_codec: RecordCodec | None = None
        # the old namespace loads objects of renamed classes under their new names
        self._old_reader = reader_of(old_connection)
        set_reader(old_connection, ObjectReader(
            old_connection, cache_of(old_connection),
            lambda _conn, module, name: self.old_codec.find_global(module, name)))
        self.result = PassResult()
        self._plans: dict[bytes, _Plan] = {}
        self._created: set[str] = set()
        #: per class met: whether it has its own __setstate__ (to check migrated states with)
        self._setstate: dict[type, bool] = {}
        #: oids of objects changed through the new namespace (by policies or user code)
        self.flushed: set[bytes] = set()
        #: per name a needle looks for: how many records held it (presence, merges)
        self._named: Counter[str] = Counter()
        #: records already stored as a rename's target (merges), per target
        self._merges: Counter[str] = Counter()
        self._inline_ops = [op for op in self.operations if any(map(may_be_inline, op.targets()))]
        self._needles = self._make_needles()
        self._hit_names: set[str] = set()
        self._inline: dict[type, _Inline] = {}
        self._shapes: dict[type, Shape] = {}
        self._started = time.monotonic()

    def _make_needles(self) -> list[tuple[bytes, int, str | None]]:
        """The names to look for in the records' bytes, and what finding each asks for."""
        wanted: dict[bytes, list[Any]] = {}

        def add(needle: bytes, flags: int, name: str | None) -> None:
            found = wanted.setdefault(needle, [0, name])
            found[0] |= flags

        for source in self._sources:
            add(key_of(source) + b"\n", _REWRITE, None)
            if may_be_inline(source):
                add(_global(source), _RENAMED, source)
        for op in self._inline_ops:
            for target in op.targets():
                for name in _inline_names(target):
                    add(_global(name), _INLINE, name)
        for name in self.removed:
            if may_be_inline(name):
                add(_global(name), _REMOVED, name)
        for op in self.all_operations:  # classes the code lacks: are they stored at all?
            for name in op.classes_named():
                if resolve(name) is None:
                    add(_global(name), 0, name)
        for target in self._targets:  # a rename onto stored (inline) instances merges
            if may_be_inline(target):
                add(_global(target), 0, target)
        return [(needle, flags, name) for needle, (flags, name) in wanted.items()]

    def release(self) -> None:
        """Give the old namespace's connection its own reader back."""
        set_reader(self.old_conn, self._old_reader)

    # -- the walk -------------------------------------------------------------

    def run(self) -> PassResult:
        tmp = savepoint_store(self.conn)
        self._store = tmp.store
        index = tmp.index
        frozen = self.frozen
        stage_start = tmp.position
        cache = cache_of(self.conn)
        result = self.result
        total = self.adapter.count()
        if total is not None and frozen is not None:
            total += len(frozen.created)  # objects earlier stages created are read too
        report_every = max(self.batch_size, 1)
        since_batch = 0
        created_before = len(tmp.creating)
        pace = self.pace
        for oid, tid, original in self._records():
            result.scanned += 1
            if pace is not None and result.scanned % EVERY == 0:
                pace()
            if result.scanned % report_every == 0:
                self._report(total)
            cached = cache.get(oid)
            if cached is not None and cached._p_changed:
                self._flush()
            data, current_tid = original, tid
            position = index.get(oid)
            if position is not None and (frozen is None or position >= stage_start):
                # changed through the new namespace during this stage: migrate that state
                data, current_tid = tmp.load(oid)
            written = self.migrate_record(oid, current_tid, data, original)
            if written is None:
                continue
            self._write(oid, current_tid, written)
            if cached is not None:
                cache.invalidate(oid)
            since_batch += 1
            if since_batch >= self.batch_size:
                since_batch = 0
                self._end_batch()
        self._flush()
        self._check_operations()
        self._check_old_namespace_untouched()
        self._report(total, final=True)
        self._note_created_classes(tmp, created_before)
        if any(self.result.removed_instances.values()):
            self._find_references_to_removed()
        return result

    def _records(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        """Every record as this stage starts from it: stored, or as earlier stages left it."""
        frozen = self.frozen
        spool = self.spool
        if spool is not None and spool.complete:
            records = spool.replay()
        else:
            records = self.adapter.current_records(at=self.at, view=self.conn)
            if spool is not None:
                records = spool.keep(records)
        if frozen is None:  # the first stage: the records as stored
            return records
        return self._as_left(records, frozen)

    @staticmethod
    def _as_left(records: Iterable[tuple[bytes, bytes, bytes]],
                 frozen: FrozenStore) -> Iterator[tuple[bytes, bytes, bytes]]:
        """``records`` as the earlier stages left them, then the objects they created."""
        for oid, tid, data in records:
            if oid in frozen:
                data, tid = frozen.load(oid)
            yield oid, tid, data
        for oid in frozen.created:  # objects earlier stages created exist only in the savepoint
            if oid in frozen:
                data, tid = frozen.load(oid)
                yield oid, tid, data

    def migrate_record(self, oid: bytes, tid: bytes, data: bytes, original: bytes) -> bytes | None:
        """The record this stage makes of ``data`` (``original``: its state before the
        stage, for the old view), or None when the stage leaves it as it is."""
        key = class_key(data)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(data)
        if plan.removed:
            self.result.removed_instances[plan.stored_name].append(oid)
            return None
        if plan.merging:
            self._merges[plan.stored_name] += 1
        hits = self._scan(data) if self._needles else 0
        if plan.ops is None and not hits & _DECODE:
            return None
        written = None
        if not plan.ops and not hits & _WALK and self._renamer.usable:
            written = self._rename_in_bytes(data, plan, hits)
        if written is None:
            written = self._migrate(oid, tid, data, original, plan, hits)
        if written is not None:
            self.result.records_rewritten += 1
        return written

    def _rename_in_bytes(self, data: bytes, plan: _Plan, hits: int) -> bytes | None:
        """A record only renames change (its class, or the classes its references and
        inline objects name), rewritten in its bytes; None when it must be decoded.

        The record is what decoding and encoding it again would write; the one thing the
        encoder would also see -- a reference to a class that does not import, which a
        system validation reports -- sends the record to the decoder instead."""
        found = self._renamer.rename(data)
        if found is None:
            return None
        written, names = found
        importable = self._importable
        for module, name in names:
            known = importable.get((module, name))
            if known is None:
                known = importable[(module, name)] = not _is_broken(
                    self.codec.find_global(module, name))
            if not known:
                return None
        if plan.renamed:
            self.result.migrated[plan.new_name] += 1
        elif plan.ops is None:
            self.result.references_rewritten += 1
        return written

    def _scan(self, data: bytes) -> int:
        """What the needles found in a record's bytes ask for; counts the names found."""
        hits = 0
        names = self._hit_names
        names.clear()
        for needle, flags, name in self._needles:
            if needle in data:
                hits |= flags
                if name is not None:
                    self._named[name] += 1
                    names.add(name)
        return hits

    @property
    def classes(self) -> set[str]:
        """Names of the classes with instances after this stage."""
        return {plan.new_name for plan in self._plans.values() if not plan.removed} | self._created

    def _note_created_classes(self, tmp: Any, created_before: int) -> None:
        for oid in list(tmp.creating)[created_before:]:
            if oid in tmp.index:
                self._created.add(class_name_of(tmp.load(oid)[0]))

    def _plan(self, data: bytes) -> _Plan:
        stored = class_name_of(data)
        module, name = split_name(stored)
        new_module, new_name = self.renames.get((module, name), (module, name))
        new = f"{new_module}.{new_name}"
        klass = resolve(new) or (resolve(stored) if new != stored else None)
        ops = [op for op in self.operations if matches(op, stored, new, klass)]
        removed = stored in self.removed or new in self.removed
        return _Plan(stored, new, klass, ops if ops or new != stored else None, removed,
                     renamed=new != stored, merging=stored in self._unasked_merges,
                     reads_old=any(op.reads_old() for op in ops))

    def _migrate(self, oid: bytes, tid: bytes, data: bytes, original: bytes, plan: _Plan,
                 hits: int) -> bytes | None:
        """Apply the stage to one record: its own operations, its inline objects, renames.

        Returns the record to write, or None when nothing in it changed.
        """
        meta, state = self.codec.decode(data)
        status: bool | None = False
        inst = None
        if plan.ops:
            klass: Any = class_of_meta(meta)
            inst = StoredInstance(oid, tid, plan.stored_name, klass, meta, state,
                                  self._old_loader(plan, data, original, state))
            status = self._apply(plan.ops, inst, plan.stored_name, oid)
            for op in plan.ops:
                problem = op.broken_promise(inst)
                if problem is not None:
                    self.result.promise_failures[f"{op.describe()}: instance {problem}"].append(oid)
            state = inst.final_state()
            if status is not False and self._setstate.get(klass) is not False:
                self._check_state_loads(klass, inst, state, plan.new_name, oid)
        inline_changed = False
        if hits & _WALK or (self._inline_ops and plan.ops and status is not False):
            inline_changed = self._migrate_inline(oid, data, state)
        if status is False and not plan.renamed and not inline_changed and not hits & _REWRITE:
            if inst is not None:
                self.result.unchanged[plan.new_name] += 1
            return None
        if not plan.decided:
            plan.write_as, plan.decided = self.codec.name_to_write(meta, plan.new_name), True
        try:
            written = self.codec.encode(meta, state, name=plan.write_as)
        except DSUError as err:
            err.add_context(class_name=plan.stored_name, oid=oid)
            raise
        if written == data:  # what ran left it as it was
            self.codec.take_broken_references()
            if inst is not None:
                self.result.unchanged[plan.new_name] += 1
            return None
        if plan.renamed or status is not False:
            self.result.migrated[plan.new_name] += 1
        elif inst is not None:  # rewritten for what it holds or names, not for its own sake
            self.result.unchanged[plan.new_name] += 1
        if plan.ops is None and hits & _REWRITE:
            self.result.references_rewritten += 1
        return written

    def _old_loader(self, plan: _Plan, data: bytes, original: bytes, state: Any) -> Callable[[], Any]:
        """How the old view of a record gets its fields, only if a policy reads them.

        A record this stage starts from as stored whose state is plain values (no
        reference, no object) reads the same through either namespace: its old view is
        a copy of the decoded state taken before the operations change it, instead of a
        second decode. Any other is decoded through the old namespace on first read.
        """
        if plan.reads_old and (data is original or data == original) and is_plain(state):
            old = {key: list(value) if type(value) is list else value
                   for key, value in state.items()}
            return lambda: old
        old_codec = self.old_codec
        return lambda: old_codec.decode(original)[1]

    def _apply(self, ops: list[Operation], inst: Any, class_name: str, oid: bytes) -> bool | None:
        """Run ``ops`` on one instance: True if one changed it, None if one may have."""
        status: bool | None = False
        for op in ops:
            try:
                changed = op.apply(inst, self)
            except DSUError as err:
                err.add_context(operation=op.describe(), class_name=class_name, oid=oid)
                raise
            except Exception as err:
                raise PolicyError(
                    f"{type(err).__name__}: {err}",
                    operation=op.describe(), class_name=class_name, oid=oid,
                ) from err
            if changed:
                status = True
            elif changed is None and status is False:
                status = None
        return status

    def _check_state_loads(self, klass: Any, inst: StoredInstance, state: Any, class_name: str,
                           oid: bytes) -> None:
        """A class with its own ``__setstate__`` must accept the migrated state."""
        custom_setstate = self._setstate.get(klass)
        if custom_setstate is None:
            custom_setstate = self._setstate[klass] = (
                not issubclass(klass, Broken) and klass.__setstate__ is not Persistent.__setstate__)
        if custom_setstate and not inst.built:
            probe = klass.__new__(klass)
            try:
                probe.__setstate__(state)
            except Exception as err:
                raise OperationError(
                    f"the migrated state does not load: {type(err).__name__}: {err}",
                    class_name=class_name, oid=oid,
                ) from err

    # -- inline objects -------------------------------------------------------

    def _migrate_inline(self, oid: bytes, data: bytes, state: Any) -> bool:
        """Apply the stage to the inline objects of one record's state; whether one changed."""
        changed = False
        ambiguous: set[str] = set()  # renamed classes the record held under the new name too
        removed: set[str] = set()
        for obj in inline_objects(state, self._wants_inline, self._shapes):
            info = self._inline_info(type(obj))
            if info.removed:
                removed.add(info.name)
                continue
            if info.renamed and info.own and info.name in self._hit_names:
                ambiguous.add(info.name)  # a merge: counted by the names they were stored under
            if info.ops:
                changed = self._migrate_inline_object(oid, obj, info, info.name in ambiguous) \
                    or changed
            elif info.renamed and info.name not in ambiguous:
                self.result.migrated[info.name] += 1
                changed = True
        if ambiguous:
            changed = self._count_renamed_inline(data, ambiguous) or changed
        for name in removed:
            self.result.removed_inline[name].append(oid)
        return changed

    def _migrate_inline_object(self, oid: bytes, obj: Any, info: _Inline, ambiguous: bool) -> bool:
        inst = InlineInstance(oid, info.name, obj, info.shape)
        before = fingerprint(obj if info.shape != "leftover" else inst.final_state())
        try:
            status = self._apply(info.ops, inst, info.name, oid)
        except PolicyError:
            raise
        except (OperationError, ClassResolutionError) as err:  # it cannot be changed that way
            self.result.unreachable[(err.operation or "", info.name, err.reason)] += 1
            return False
        if status is None:
            status = fingerprint(obj if info.shape != "leftover" else inst.final_state()) != before
        for op in info.ops:
            problem = op.broken_promise(inst)
            if problem is not None:
                self.result.promise_failures[f"{op.describe()}: inline instance {problem}"].append(oid)
        if status or (info.renamed and not ambiguous):
            self.result.migrated[info.name] += 1
            return True
        self.result.unchanged[info.name] += 1
        return False

    def _count_renamed_inline(self, data: bytes, targets: set[str]) -> bool:
        """Count the inline objects a record held under the old name of a class renamed to
        one of ``targets``, telling them from those it held under the new one (a merge):
        the record is decoded again without the renames."""
        if self._plain_codec is None:
            self._plain_codec = RecordCodec(self.conn)
        _meta, state = self._plain_codec.decode(data)
        sources = {source for target in targets for source in self._sources_of[target]}
        counted = False
        for obj in inline_objects(state, lambda kind: _dotted(kind) in sources, self._shapes):
            target = self.renames[split_name(_dotted(type(obj)))]
            self.result.migrated[f"{target[0]}.{target[1]}"] += 1
            counted = True
        return counted

    def _wants_inline(self, kind: type) -> bool:
        return self._inline_info(kind).wanted

    def _inline_info(self, kind: type) -> _Inline:
        info = self._inline.get(kind)
        if info is None:
            own = _dotted(kind)
            written = self.codec.written_name(kind)
            real = None if issubclass(kind, Broken) else kind
            names = {own, written} | self._sources_of.get(written, set())
            ops = [op for op in self.operations
                   if any(matches(op, name, written, real) for name in names)]
            shape = self._shapes.get(kind) or shape_of(kind)
            info = self._inline[kind] = _Inline(
                written, ops, shape, removed=written in self.removed or own in self.removed,
                renamed=written in self._targets, own=own == written)
        return info

    # -- checks -----------------------------------------------------------------

    def _check_operations(self) -> None:
        """Before anything commits: no operation names a class that exists nowhere, no
        rename merges unasked, every inline instance an operation applies to was reached."""
        stored = Counter(self._named)
        for name in {plan.stored_name for plan in self._plans.values()}:
            stored[name] += self._merges.get(name) or 1  # records are counted where it matters
        check_classes(self.all_operations, stored)
        for (operation, class_name, why), count in sorted(self.result.unreachable.items()):
            raise OperationError(
                f"{count} inline instance(s) of {class_name} cannot be changed by this operation: "
                f"{why}", operation=operation or None, class_name=class_name)

    def _write(self, oid: bytes, tid: bytes, data: bytes) -> None:
        self._store(oid, tid, data, "", None)
        if self.codec.take_broken_references():
            self.result.broken_references.append(oid)

    # -- batches --------------------------------------------------------------

    def _flush(self) -> None:
        """Store objects changed through the new namespace into the savepoint storage."""
        self.flushed.update(flush_changes(self.conn))

    def _end_batch(self) -> None:
        self._flush()
        self.conn.cacheMinimize()
        self.old_conn.cacheMinimize()

    def _check_old_namespace_untouched(self) -> None:
        changed = [obj for obj in registered_objects(self.old_conn) if obj._p_changed]
        if changed:
            obj = changed[0]
            raise ReadOnlyStateError(
                "a policy changed an object of the old namespace; write to the new one",
                class_name=f"{type(obj).__module__}.{type(obj).__qualname__}", oid=obj._p_oid,
            )

    def _report(self, total: int | None, *, final: bool = False) -> None:
        if self.progress is None:
            return
        scanned = self.result.scanned
        self.progress(Progress(self.phase, scanned, sum(self.result.migrated.values()),
                               scanned if final else total, time.monotonic() - self._started))

    # -- removed classes ------------------------------------------------------

    def _find_references_to_removed(self) -> None:
        """Flag live objects that still reference an instance of a removed class.

        Live means reachable from the root in the namespace being built: a walk over
        references, loading each record once. Instances nobody live references are
        garbage that packing removes; they are counted in the report, not flagged.
        """
        removed: dict[bytes, str] = {}
        for name, oids in self.result.removed_instances.items():
            for oid in oids:
                removed[oid] = name
        load = savepoint_store(self.conn).load
        seen = {z64}
        stack = [z64]
        referenced: set[bytes] = set()
        referrers: dict[bytes, None] = {}
        while stack:
            oid = stack.pop()
            try:
                data, _tid = load(oid)
            except POSKeyError:
                continue
            for ref in referencesf(data):
                if ref in removed:
                    referrers[oid] = None
                    referenced.add(ref)
                elif ref not in seen:
                    seen.add(ref)
                    stack.append(ref)
        self.referrers_of_removed = list(referrers)
        for oid, name in removed.items():
            if oid not in referenced:
                self.result.unreferenced[name] += 1

    def system_validations(self) -> list[Validation]:
        """The validations dsustore always runs, from what the pass found."""
        checks: list[Validation] = []
        for problem, oids in self.result.promise_failures.items():
            checks.append(SystemValidation(problem, oids))
        if self.removed:
            removed = ", ".join(sorted(self.removed))
            checks.append(SystemValidation(
                f"objects still reference instances of removed class {removed}",
                getattr(self, "referrers_of_removed", [])))
            holders = [oid for oids in self.result.removed_inline.values() for oid in oids]
            checks.append(SystemValidation(
                f"objects still hold inline instances of removed class {removed}", holders))
        checks.append(SystemValidation(
            "migrated objects reference objects whose class does not import",
            self.result.broken_references))
        return checks


def catch_up(passes: list[MigrationPass], adapter: StorageAdapter, changed: Iterable[bytes],
             user_changed: set[bytes], pace: Callable[[], None] | None = None) -> int:
    """Migrate what other transactions committed while the passes ran; returns how many.

    Each changed object is read as last committed and put through every stage in
    order, so the single commit that follows writes it migrated from its latest
    state instead of failing with a conflict or leaving an object the application
    created meanwhile in the old shape. An object that both the application and the
    update's own code (a policy writing through the new namespace) changed is a real
    conflict. Application validations are not run again: they saw the state the
    passes built, and this adds only what arrived meanwhile.
    """
    tmp = savepoint_store(passes[0].conn)
    cache = cache_of(passes[0].conn)
    failures_before = [_failure_count(p.result) for p in passes]
    count = 0
    changed = list(changed)
    adapter.prefetch(changed)
    storage = adapter.storage
    for number, oid in enumerate(changed):
        if pace is not None and number % EVERY == 0:
            pace()
        try:
            data, tid = storage.load(oid)
        except POSKeyError:  # deleted meanwhile (packed or undone)
            continue
        if oid in user_changed or any(oid in p.flushed for p in passes):
            raise ConflictError(oid=oid)
        touched = False
        for migration in passes:
            new = migration.migrate_record(oid, tid, data, data)
            if new is not None:
                data, touched = new, True
                if migration.codec.take_broken_references():
                    migration.result.broken_references.append(oid)
        if touched or oid in tmp.index:
            tmp.store(oid, tid, data, "", None)
            cache.invalidate(oid)
            count += 1
    for migration, before in zip(passes, failures_before, strict=True):
        if _failure_count(migration.result) != before:
            raise ValidationError([check.failure() for check in migration.system_validations()
                                   if check.flagged_count])
    return count


def _failure_count(result: PassResult) -> int:
    return sum(map(len, result.promise_failures.values())) + len(result.broken_references)


def _is_broken(found: Any) -> bool:
    return isinstance(found, type) and issubclass(found, Broken)


def _dotted(kind: type) -> str:
    """The name a class goes by: a broken class by the name it was stored under."""
    if issubclass(kind, Broken):
        return f"{kind.__module__}.{kind.__name__}"
    return f"{kind.__module__}.{kind.__qualname__}"


def _global(name: str) -> bytes:
    """The bytes a record naming class ``name`` holds (pickle's GLOBAL opcode)."""
    return b"c" + key_of(name) + b"\n"


def _inline_names(target: str) -> list[str]:
    """The names inline instances of ``target`` (a class or its subclasses) are stored under."""
    klass = resolve(target)
    if klass is None:
        return [target]
    if issubclass(klass, Persistent):
        return []
    names = {target: None}
    stack = [klass]
    while stack:
        kind = stack.pop()
        if not issubclass(kind, Persistent):
            names[f"{kind.__module__}.{kind.__qualname__}"] = None
        stack.extend(kind.__subclasses__())
    return list(names)
