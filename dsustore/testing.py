"""Testing migrations: run them up and down a database, and read what its records hold.

:class:`MigrationRunner` drives a migrations folder against one database the way a
test wants to: up to a revision, to just before one, one step up or down.
:func:`records` reads every record reachable from the root -- its class name and
its state, decoded without importing a single class of the application -- so a
test compares what a migration wrote without depending on the code that is
active, and :func:`differences` says in words how two such readings differ.

The pytest plugin (:mod:`dsustore.pytest_plugin`) builds its four built-in tests
on these, and gives a test a runner as the ``dsustore_runner`` fixture::

    def test_0003_gives_every_customer_an_email(dsustore_runner):
        dsustore_runner.up_to_before("0003")
        dsustore_runner.step_up()
        for customer in dsustore_runner.instances("crm.models.Customer"):
            assert customer.fields["email"].endswith("@example.org")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ZODB.serialize import referencesf
from ZODB.utils import z64

from . import commands
from .engine.bookkeeping import ROOT_KEY, bookkeeping
from .errors import DSUError
from .mop.records import class_name_of
from .mop.stored import Ref, Stored, decode_state, state_fields
from .runtime import runner
from .runtime.history import applied_revisions
from .runtime.revisions import RevisionGraph
from .runtime.schema import record_observed_schema, stored_schema
from .runtime.scripts import Script
from .storage import adapter_for
from .storage.connections import reading

__all__ = [
    "IrreversibleStepWarning",
    "MigrationRunner",
    "Record",
    "Ref",
    "Stored",
    "decode_state",
    "differences",
    "records",
]


class IrreversibleStepWarning(UserWarning):
    """A migration step defines no ``downgrade()``, so no way back could be checked."""


# -- reading records ------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One stored object: its class's dotted name and its decoded state."""

    oid: str
    class_name: str
    state: Any

    @property
    def fields(self) -> dict[str, Any]:
        """The state's fields (a persistent object's ``__dict__``; ``{}`` for other states)."""
        return state_fields(self.state) or {}


def records(db: Any) -> dict[str, Record]:
    """Every record reachable from the root, by oid; dsustore's own bookkeeping left out.

    Objects a migration left unreachable (what a downgrade dropped, waiting for a
    pack) are not counted: only what the application can reach is its data.
    """
    with reading(db) as root:
        bk = bookkeeping(root)
        skip = bk._p_oid if bk is not None else None
    stored = {oid: data for oid, _tid, data in adapter_for(db).current_records()}
    found: dict[str, Record] = {}
    stack = [z64] if z64 in stored else []
    seen = set(stack)
    while stack:
        oid = stack.pop()
        data = stored[oid]
        state = decode_state(data)
        if oid == z64:
            state = _without_bookkeeping(state)
        found[_hex(oid)] = Record(_hex(oid), class_name_of(data), state)
        for ref in referencesf(data):
            if ref != skip and ref not in seen and ref in stored:
                seen.add(ref)
                stack.append(ref)
    return dict(sorted(found.items(), key=lambda item: int(item[0], 16)))


def _without_bookkeeping(state: Any) -> Any:
    """The root's state without the ``dsustore`` key (the root is a PersistentMapping)."""
    if isinstance(state, dict):
        for key in ("data", "_container"):
            inner = state.get(key)
            if isinstance(inner, dict) and ROOT_KEY in inner:
                return {**state, key: {k: v for k, v in inner.items() if k != ROOT_KEY}}
    return state


def differences(before: dict[str, Record], after: dict[str, Record], *, limit: int = 10) -> list[str]:
    """How two readings of :func:`records` differ, one line per object (at most ``limit``)."""
    found: list[str] = []
    for oid, old in before.items():
        new = after.get(oid)
        if new is None:
            found.append(f"{oid} ({old.class_name}) is no longer reachable")
        elif new.class_name != old.class_name:
            found.append(f"{oid} was a {old.class_name}, is now a {new.class_name}")
        elif new.state != old.state:
            found.append(f"{oid} ({old.class_name}): {_state_difference(old, new)}")
    found += [f"{oid} ({new.class_name}) is new" for oid, new in after.items() if oid not in before]
    if len(found) > limit:
        found = [*found[:limit], f"... and {len(found) - limit} more"]
    return found


def _state_difference(old: Record, new: Record) -> str:
    before, after = old.fields, new.fields
    if not before and not after:
        return f"state was {old.state!r}, is now {new.state!r}"
    parts = []
    for name in [*before, *(n for n in after if n not in before)]:
        if name not in after:
            parts.append(f"field {name!r} was {before[name]!r}, is now absent")
        elif name not in before:
            parts.append(f"field {name!r} is now {after[name]!r}, was absent")
        elif before[name] != after[name]:
            parts.append(f"field {name!r} was {before[name]!r}, is now {after[name]!r}")
    return "; ".join(parts) or f"state was {old.state!r}, is now {new.state!r}"


def _hex(oid: bytes) -> str:
    return hex(int.from_bytes(oid, "big"))


# -- running migrations -----------------------------------------------------------------


@dataclass
class MigrationRunner:
    """A migrations folder and a database, for tests: move the database between revisions.

    Runs take no snapshot (``snapshot=True`` takes them, as a real run does). Before
    the first run, a database with no recorded schema gets the schema of its data
    (:func:`dsustore.runtime.schema.record_observed_schema`): the migrations are then
    checked from the shape the oldest release stored, not from the code under test.
    """

    db: Any
    migrations: Path
    snapshot: bool = False
    graph: RevisionGraph = field(init=False, repr=False)
    _observed: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.migrations = Path(self.migrations)
        self.graph = runner.revision_graph(self.migrations)

    # -- where things are --------------------------------------------------------

    @property
    def history(self) -> list[Script]:
        """Every script, base first."""
        return self.graph.history()

    @property
    def heads(self) -> tuple[str, ...]:
        """The head revisions of the scripts."""
        return self.graph.heads()

    def current(self) -> tuple[str, ...]:
        """The revisions the database is at (``()``: the base)."""
        return runner.current(self.db)

    def pending(self, target: str = "heads") -> list[Script]:
        """The scripts an upgrade to ``target`` would run, parents first."""
        return self.graph.upgrade_path(applied_revisions(self.db), target)

    def downgrade_path(self, target: str) -> list[Script]:
        """The scripts a downgrade to ``target`` would undo, children first."""
        return self.graph.downgrade_path(applied_revisions(self.db), target)

    # -- moving ------------------------------------------------------------------

    def upgrade(self, target: str = "head") -> runner.UpgradeResult:
        """Apply the migrations up to ``target`` (any target the command line takes)."""
        self._observe()
        return runner.upgrade(self.db, self.migrations, target, snapshot=self.snapshot)

    def downgrade(self, target: str) -> runner.UpgradeResult:
        """Undo the migrations above ``target`` (``"base"`` undoes them all)."""
        self._observe()
        return runner.downgrade(self.db, self.migrations, target, snapshot=self.snapshot)

    def _observe(self) -> None:
        if not self._observed:
            self._observed = True
            if not stored_schema(self.db):
                record_observed_schema(self.db)

    def up_to_before(self, revision: str) -> runner.UpgradeResult:
        """Apply everything ``revision`` builds on, and not ``revision`` itself."""
        script = self.graph.get(self.graph.resolve(revision)[0])
        result = runner.UpgradeResult("upgrade", False)
        for parent in script.down_revisions:
            result.migrations += self.upgrade(parent).migrations
        return result

    def step_up(self) -> str:
        """Apply the next migration (one); its revision."""
        waiting = self.pending()
        if not waiting:
            raise DSUError(f"nothing to step up to: the database is at {self._at()}")
        self.upgrade(waiting[0].revision)
        return waiting[0].revision

    def step_down(self) -> str:
        """Undo the last migration (one); its revision."""
        at = self.current()
        if len(at) != 1:
            raise DSUError(f"no single migration to step down from: the database is at {self._at()}")
        script = self.graph.get(at[0])
        self.downgrade(script.down_revisions[0] if script.down_revisions else "base")
        return script.revision

    # -- reading -----------------------------------------------------------------

    def records(self) -> dict[str, Record]:
        """Every record reachable from the root (see :func:`records`)."""
        return records(self.db)

    def instances(self, class_name: str) -> list[Record]:
        """The reachable records of one class, by dotted name."""
        return [r for r in self.records().values() if r.class_name == class_name]

    def status(self) -> dict[str, Any]:
        """What ``dsustore status`` says of the database (see :func:`dsustore.commands.status`)."""
        return commands.status(self.db, self.migrations)

    def _at(self) -> str:
        return ", ".join(self.current()) or "base"

