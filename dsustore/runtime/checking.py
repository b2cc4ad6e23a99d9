"""A run's migrations checked against the stored classes before the run writes anything.

An upgrade takes a snapshot before its first migration, and each migration's pass
checks its operations only once its scan is done. A misspelt class is refused
before either: the operations of the migrations about to run are recorded (their
scripts run on a patch that is rolled back) and checked against one count of the
stored classes, as each pass will check them (:mod:`dsustore.engine.checks`). The
count is taken only when an operation needs it -- a class the code lacks, a rename
-- so most runs read nothing more. ``dsustore plan`` checks the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..engine import Patch
from ..engine.checks import check_classes
from ..errors import DSUError
from ..mop import named_classes
from ..mop.classes import resolve
from ..mop.inline import may_be_inline
from ..operations import Operation, RenameClass
from .scripts import Script

#: a migration's id and the operations its script records
Recorded = tuple[str, list[Operation]]


def recorded_operations(db: Any, script: Script, direction: str = "upgrade") -> list[Operation]:
    """The operations ``script`` records in ``direction``, on a patch that is rolled back."""
    build = script.upgrade if direction == "upgrade" else script.downgrade
    # with caches of its own: a live update runs this with new code beside the old
    patch = Patch(db, description=f"check {script.revision}", isolated_caches=True).begin()
    try:
        build(patch)
        return list(patch.operations)
    finally:
        patch.rollback()


def check_before_running(db: Any, scripts: Iterable[Script], direction: str) -> None:
    """Refuse a run whose migrations name classes that exist nowhere, before it writes.

    A script that fails to record its operations is left for the run to report, as
    it always has.
    """
    recorded: list[Recorded] = []
    for script in scripts:
        try:
            recorded.append((script.revision, recorded_operations(db, script, direction)))
        except Exception:
            return
    check_recorded(db, recorded)


def check_recorded(db: Any, recorded: list[Recorded]) -> None:
    """Check each migration's operations as its pass will, in order.

    The first migration meets the stored classes as they are, and each rename hands
    the next migrations its new name. A later migration also runs after policies
    nothing here can foresee, which may create instances of any class the code has:
    those count as existing for it (its own pass checks exactly).
    """
    if not any(_needs_stored_classes(ops) for _revision, ops in recorded):
        return
    asked = {name for _revision, ops in recorded for op in ops
             for name in (*op.classes_named(), *op.targets()) if may_be_inline(name)}
    stored = named_classes(db, asked)
    for number, (revision, ops) in enumerate(recorded):
        try:
            check_classes(ops, stored, may_exist=_imports if number else None)
        except DSUError as err:
            err.with_migration(revision)
            raise
        for op in ops:
            if isinstance(op, RenameClass) and stored.get(op.old_name):
                stored[op.new_name] += stored.pop(op.old_name)


def _needs_stored_classes(ops: list[Operation]) -> bool:
    """Whether checking ``ops`` needs the stored classes: a class the code lacks, a rename."""
    return any(isinstance(op, RenameClass) or any(resolve(name) is None for name in op.classes_named())
               for op in ops)


def _imports(name: str) -> bool:
    return resolve(name) is not None
