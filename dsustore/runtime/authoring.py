"""Writing new migration scripts into a migrations folder (``dsustore revision``, ``dsustore merge``)."""

from __future__ import annotations

import logging
import re
import secrets
import textwrap
from collections.abc import Iterable
from pathlib import Path

from ..errors import DuplicateRevisionError, MigrationScriptError, MissingParentError, RevisionError
from .revisions import RevisionGraph
from .scripts import check_revision_id, compile_script, first_line, load_scripts

log = logging.getLogger(__name__)

_TEMPLATE = '''\
"""{message}

Revision ID: {revision}
Revises: {revises}
"""

revision = "{revision}"
down_revision = {down_revision}


def upgrade(patch):
{upgrade}
'''

_DOWNGRADE_TEMPLATE = '''

def downgrade(patch):
{downgrade}
'''


def write_script(
    folder: str | Path,
    *,
    message: str,
    revision: str | None = None,
    down_revision: str | Iterable[str] | None = None,
    body_upgrade: str = "pass",
    body_downgrade: str | None = "pass",
) -> Path:
    """Write a new migration script into ``folder`` and return its path.

    ``revision`` defaults to the number after the folder's highest numeric revision
    (``0001`` for an empty folder), or a short random hex id when the folder's ids
    are not numeric. ``down_revision`` defaults to the folder's single head (so the
    new script goes on top); pass ``()`` to start a new base explicitly. A
    ``body_downgrade`` of None writes no ``downgrade`` function.
    """
    message = message.strip()
    if not message:
        raise MigrationScriptError("a migration needs a message")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scripts = load_scripts(folder)
    graph = RevisionGraph(scripts)
    if revision is None:
        revision = next_revision_id(s.revision for s in scripts)
    check_revision_id(revision)
    if revision in graph:
        raise DuplicateRevisionError(
            f"revision {revision!r} already exists in {graph.get(revision).path.name}",
            migration=revision,
        )
    if down_revision is None:
        head = graph.head()
        parents: tuple[str, ...] = (head,) if head is not None else ()
    else:
        parents = (down_revision,) if isinstance(down_revision, str) else tuple(down_revision)
    if len(set(parents)) != len(parents):
        raise MigrationScriptError(
            f"down_revision lists a revision twice: {parents!r}", migration=revision
        )
    for parent in parents:
        if check_revision_id(parent, what="down_revision") not in graph:
            raise MissingParentError(
                f"down_revision {parent!r} for the new script names no known revision",
                migration=revision,
            )
    text = _render(message, revision, parents, body_upgrade, body_downgrade)
    slug = _slug(message)
    path = folder / (f"{revision}_{slug}.py" if slug else f"{revision}.py")
    try:
        compile_script(text, path)
    except MigrationScriptError as exc:
        raise MigrationScriptError(f"the new script would not compile: {exc}") from exc
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError as exc:
        raise MigrationScriptError(f"{path.name} already exists", migration=revision) from exc
    log.info("wrote migration %s to %s", revision, path)
    return path


def write_merge(
    folder: str | Path,
    *,
    message: str,
    revisions: Iterable[str] = (),
    revision: str | None = None,
) -> Path:
    """Write a merge revision whose ``down_revision`` is ``revisions`` (default: every head).

    A forked history -- two scripts written on the same parent -- has several heads,
    and ``upgrade head`` refuses it; the merge makes it one history again. Targets
    such as ``heads`` or unique prefixes are accepted. At least two revisions are
    needed, none an ancestor of another (that one is merged already).
    """
    folder = Path(folder)
    graph = RevisionGraph(load_scripts(folder))
    parents: list[str] = []
    for target in list(revisions) or ["heads"]:
        for rev in graph.resolve(target):
            if rev not in parents:
                parents.append(rev)
    if len(parents) < 2:
        raise RevisionError(
            f"nothing to merge: {', '.join(parents) or 'no revision'} "
            f"{'is' if len(parents) == 1 else 'are'} named, a merge joins two heads or more",
            migration=parents[0] if parents else None,
        )
    for parent in parents:
        for other in parents:
            if parent != other and graph.is_ancestor(parent, other):
                raise RevisionError(
                    f"{parent} is already an ancestor of {other}: merge heads of separate branches",
                    migration=parent,
                )
    return write_script(folder, message=message, revision=revision, down_revision=parents)


def next_revision_id(existing: Iterable[str]) -> str:
    """The id after the highest numeric one (4 digits at least), else random hex."""
    existing = list(existing)
    numbers = [int(r) for r in existing if r.isdigit()]
    if numbers or not existing:
        return str(max(numbers, default=0) + 1).zfill(4)
    taken = set(existing)
    while (candidate := secrets.token_hex(6)) in taken:
        pass
    return candidate


def _render(
    message: str,
    revision: str,
    parents: tuple[str, ...],
    body_upgrade: str,
    body_downgrade: str | None,
) -> str:
    quoted = [f'"{parent}"' for parent in parents]
    if len(quoted) > 1:
        down_revision = f"({', '.join(quoted)})"
    else:
        down_revision = quoted[0] if quoted else "None"
    text = _TEMPLATE.format(
        message=_docstring_safe(message),
        revision=revision,
        revises=", ".join(parents) or "(base)",
        down_revision=down_revision,
        upgrade=_indent(body_upgrade),
    )
    if body_downgrade is not None:
        text += _DOWNGRADE_TEMPLATE.format(downgrade=_indent(body_downgrade))
    return text


def _docstring_safe(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def _indent(body: str) -> str:
    body = textwrap.dedent(body).strip("\n") or "pass"
    return textwrap.indent(body, "    ")


def _slug(message: str) -> str:
    first = first_line(message).lower()
    return re.sub(r"[^a-z0-9]+", "_", first).strip("_")[:40].rstrip("_")


__all__ = ["next_revision_id", "write_merge", "write_script"]
