"""Does every operation of a stage name something that exists? Asked before anything commits.

An operation on a class that neither imports nor has stored instances matches
nothing: most likely a misspelt name, which would otherwise run, migrate no object
and be recorded as applied. A rename onto a class that already has stored instances
merges the two, which only an explicit ``merge=True`` may do. Both are decided
from the classes the stored records hold: the pass's own scan of the records (no
second one), or for ``dsustore plan`` one count of the classes.

A database that holds no application class at all (a new one, being brought to
the head revision: only its root, containers and bookkeeping) has nothing a
misspelt name could have missed, and a migration written for older data -- moving
or removing a class this database never stored -- runs on it as it is.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping

from ..errors import OperationError, UnknownClassError
from ..mop.classes import is_infrastructure
from ..operations.ops import Operation, RenameClass


def check_classes(operations: Iterable[Operation], stored: Mapping[str, int], *,
                  may_exist: Callable[[str], bool] | None = None) -> None:
    """Refuse operations on classes that exist nowhere, and renames that merge unasked.

    ``stored`` counts, per class name, the records that hold or name instances of it;
    ``may_exist`` says which other classes may have instances by the time the
    operations run (a plan's later migrations run after policies it cannot foresee).
    """
    ops = list(operations)

    def present(name: str) -> bool:
        return stored.get(name, 0) > 0

    def known(name: str) -> bool:
        return present(name) or (may_exist is not None and may_exist(name))

    has_data = any(count and not is_infrastructure(name) for name, count in stored.items())
    for op in ops if has_data else ():
        unknown = op.unknown_classes(known)
        if unknown:
            raise unknown_class(op, unknown[0], [name for name, count in stored.items() if count])
    sources = {op.old_name for op in ops if isinstance(op, RenameClass)}
    for op in ops:
        if (isinstance(op, RenameClass) and not op.merge and op.new_name not in sources
                and present(op.new_name)):
            raise OperationError(
                f"{op.new_name} already has stored instances ({stored[op.new_name]} records hold "
                f"or name one); renaming {op.old_name} onto it would merge the two classes into "
                "one: pass merge=True to rename_class if that is what is meant",
                operation=op.describe(), class_name=op.new_name)


def unknown_class(op: Operation, name: str, stored_names: Iterable[str]) -> UnknownClassError:
    """The error for ``op`` naming ``name``, with the closest stored class names."""
    suggestions = difflib.get_close_matches(name, sorted(set(stored_names)), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""
    return UnknownClassError(
        f"no class {name}: it does not import from the current code and no stored record "
        f"holds an instance of it, so the operation would match nothing{hint}",
        operation=op.describe(), class_name=name, suggestions=suggestions)
