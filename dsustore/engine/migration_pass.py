"""The migration pass: one streaming walk over the stored records, applying operations.

The pass reads every current record once, straight from the storage, and decides
from the class named in the record's first bytes whether any operation applies. Only
those records are decoded, migrated as plain state, encoded and written into the
patch connection's savepoint storage, a temporary file the connection copies into
the storage when the transaction commits. Nothing is committed here, the running
application keeps using the old state, and memory holds one record at a time plus
the storage's own per-transaction index.

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
from ..storage.savepoints import FrozenStore
from ..storage.spool import ScanSpool
from .reports import Progress

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What the pass did and found, for the report and the system validations."""

    scanned: int = 0
    migrated: Counter[str] = field(default_factory=Counter)
    references_rewritten: int = 0
    removed_instances: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    promise_failures: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    broken_references: list[bytes] = field(default_factory=list)
    unreferenced: Counter[str] = field(default_factory=Counter)


@dataclass
class _Plan:
    stored_name: str
    new_name: str
    klass: type | None
    ops: list[Operation] | None
    removed: bool


class MigrationPass(Context):
    """Runs the per-instance operations of one patch stage over the whole database.

    A patch in several stages runs one pass per stage, all in the same transaction:
    a later stage reads each record as the earlier stages left it in the savepoint
    storage (``frozen``, the store as it was when the stage began), and its old
    namespace shows that state too.
    """

    def __init__(self, *, adapter: StorageAdapter, connection: Any, old_connection: Any, at: bytes,
                 old_ns: Any, new_ns: Any, operations: list[Operation], batch_size: int,
                 progress: Callable[[Progress], None] | None, frozen: FrozenStore | None = None,
                 label: str | None = None, old_renames: dict[tuple[str, str], tuple[str, str]]
                 | None = None, spool: ScanSpool | None = None) -> None:
        self.adapter = adapter
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
        self.operations = [op for op in operations if op.per_instance]
        self.renames = {
            split_name(op.old_name): split_name(op.new_name)
            for op in operations if isinstance(op, RenameClass)
        }
        self.needles = [key_of(op.old_name) + b"\n" for op in operations if isinstance(op, RenameClass)]
        self.removed = {op.class_name for op in operations if isinstance(op, RemoveClass)}
        self.codec = RecordCodec(connection, self.renames, removed=self.removed)
        self.old_codec = RecordCodec(old_connection, {**(old_renames or {}), **self.renames})
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
        self._started = time.monotonic()

    def release(self) -> None:
        """Give the old namespace's connection its own reader back."""
        set_reader(self.old_conn, self._old_reader)

    # -- the walk -------------------------------------------------------------

    def run(self) -> PassResult:
        tmp = savepoint_store(self.conn)
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
        for oid, tid, original in self._records():
            result.scanned += 1
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
        for oid, tid, data in records:
            if frozen is not None and oid in frozen:
                data, tid = frozen.load(oid)
            yield oid, tid, data
        if frozen is not None:  # objects earlier stages created exist only in the savepoint
            for oid in frozen.created:
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
        if plan.ops is None:
            if not (self.needles and any(n in data for n in self.needles)):
                return None
            return self._rewrite_references(oid, data)
        return self._migrate(oid, tid, data, original, plan)

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
        klass = resolve(new)
        ops = [op for op in self.operations if matches(op, stored, new, klass)]
        removed = stored in self.removed or new in self.removed
        return _Plan(stored, new, klass, ops if ops or new != stored else None, removed)

    def _migrate(self, oid: bytes, tid: bytes, data: bytes, original: bytes, plan: _Plan) -> bytes:
        meta, state = self.codec.decode(data)
        klass: Any = class_of_meta(meta)
        custom_setstate = self._setstate.get(klass)
        if custom_setstate is None and issubclass(klass, Broken):
            raise ClassResolutionError(
                "the stored class does not import from the current code",
                class_name=plan.new_name, oid=oid,
                operation=plan.ops[0].describe() if plan.ops else None,
            )
        if custom_setstate is None:
            custom_setstate = self._setstate[klass] = klass.__setstate__ is not Persistent.__setstate__
        inst = StoredInstance(oid, tid, plan.stored_name, klass, meta, state,
                              lambda: self.old_codec.decode(original)[1])
        for op in plan.ops or ():
            try:
                op.apply(inst, self)
            except DSUError as err:
                err.add_context(operation=op.describe(), class_name=plan.stored_name, oid=oid)
                raise
            except Exception as err:
                raise PolicyError(
                    f"{type(err).__name__}: {err}",
                    operation=op.describe(), class_name=plan.stored_name, oid=oid,
                ) from err
        for op in plan.ops or ():
            problem = op.broken_promise(inst)
            if problem is not None:
                self.result.promise_failures[f"{op.describe()}: instance {problem}"].append(oid)
        final = inst.final_state()
        if custom_setstate and not inst.built:
            probe = klass.__new__(klass)
            try:
                probe.__setstate__(final)
            except Exception as err:
                raise OperationError(
                    f"the migrated state does not load: {type(err).__name__}: {err}",
                    class_name=plan.new_name, oid=oid,
                ) from err
        self.result.migrated[plan.new_name] += 1
        try:
            return self.codec.encode(meta, final)
        except DSUError as err:
            err.add_context(class_name=plan.stored_name, oid=oid)
            raise

    def _rewrite_references(self, oid: bytes, data: bytes) -> bytes | None:
        meta, state = self.codec.decode(data)
        try:
            new = self.codec.encode(meta, state)
        except ClassResolutionError as err:
            err.add_context(oid=oid, note="its record refers to a renamed class")
            raise
        if new == data:
            return None
        self.result.references_rewritten += 1
        return new

    def _write(self, oid: bytes, tid: bytes, data: bytes) -> None:
        savepoint_store(self.conn).store(oid, tid, data, "", None)
        broken = self.codec.take_broken_references()
        if broken:
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
        checks.append(SystemValidation(
            "migrated objects reference objects whose class does not import",
            self.result.broken_references))
        return checks


def catch_up(passes: list[MigrationPass], adapter: StorageAdapter, changed: Iterable[bytes],
             user_changed: set[bytes]) -> int:
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
    for oid in changed:
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
