"""The revision graph of a migrations folder: heads, targets and the paths between them.

Scripts point down to their parents (``down_revision``); a merge points to several.
The graph is checked when it is built (duplicate ids, unknown parents, cycles), so a
broken folder is reported before anything touches a database. "Applied" revisions
are a plain set of ids, as recorded by whoever runs the scripts.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from ..errors import (
    AmbiguousRevisionError,
    CycleError,
    DuplicateRevisionError,
    MissingDowngradeError,
    MissingParentError,
    MultipleHeadsError,
    RevisionError,
    UnknownRevisionError,
)
from .scripts import Script

BASE = "base"
HEAD = "head"
HEADS = "heads"
_RELATIVE_RE = re.compile(r"(?P<anchor>.*?)(?P<sign>[+-])(?P<steps>\d+)\Z")


class RevisionGraph:
    """The scripts of a folder as a validated DAG, in a stable topological order."""

    def __init__(self, scripts: Iterable[Script]) -> None:
        self._scripts: dict[str, Script] = {}
        for script in scripts:
            other = self._scripts.get(script.revision)
            if other is not None:
                raise DuplicateRevisionError(
                    f"revision {script.revision!r} is declared by both"
                    f" {other.path.name} and {script.path.name}",
                    migration=script.revision,
                )
            self._scripts[script.revision] = script
        self._children: dict[str, list[str]] = {rev: [] for rev in self._scripts}
        for script in self._scripts.values():
            for parent in script.down_revisions:
                if parent not in self._scripts:
                    raise MissingParentError(
                        f"{script.path.name}: down_revision {parent!r} names no known revision",
                        migration=script.revision,
                    )
                self._children[parent].append(script.revision)
        self._order = self._topological_order()
        self._rank = {rev: i for i, rev in enumerate(self._order)}

    # -- shape -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._scripts)

    def __iter__(self) -> Iterator[Script]:
        return iter(self.history())

    def __contains__(self, revision: object) -> bool:
        return revision in self._scripts

    def get(self, revision: str) -> Script:
        """The script declaring exactly ``revision``."""
        try:
            return self._scripts[revision]
        except KeyError:
            raise UnknownRevisionError(
                f"no script declares revision {revision!r}", migration=revision
            ) from None

    def history(self) -> list[Script]:
        """All scripts from base to head(s), parents before children."""
        return [self._scripts[rev] for rev in self._order]

    def heads(self) -> tuple[str, ...]:
        """Revisions no script points down to."""
        return tuple(rev for rev in self._order if not self._children[rev])

    def bases(self) -> tuple[str, ...]:
        """Revisions that point down to nothing."""
        return tuple(rev for rev in self._order if not self._scripts[rev].down_revisions)

    def head(self) -> str | None:
        """The single head (None for an empty folder); several heads raise."""
        heads = self.heads()
        if len(heads) > 1:
            raise MultipleHeadsError(
                f"the migrations have several heads: {self._labels(heads)};"
                " join them with a merge revision (`dsustore merge -m MESSAGE`), or apply"
                " every branch on purpose (`dsustore upgrade heads`, target='heads')",
                heads=heads,
            )
        return heads[0] if heads else None

    def is_ancestor(self, ancestor: str, revision: str) -> bool:
        """Whether ``revision`` builds on ``ancestor``, directly or not."""
        self.get(ancestor)
        return ancestor in self._ancestors([self.get(revision).revision], inclusive=False)

    def current_heads(self, applied: Iterable[str]) -> tuple[str, ...]:
        """The applied revisions that no other applied revision descends from."""
        done = self._check_applied(applied)
        return tuple(
            rev
            for rev in self._order
            if rev in done and not any(child in done for child in self._children[rev])
        )

    # -- targets ---------------------------------------------------------------

    def resolve(self, target: str, applied: Iterable[str] | None = None) -> tuple[str, ...]:
        """The revisions a target names; ``()`` is the base (nothing applied).

        Accepts ``head``, ``heads``, ``base``, a revision id, a unique prefix of one,
        ``<target>-N`` / ``<target>+N`` (N steps down/up a straight line), and
        ``-N`` / ``+N`` relative to the current head of ``applied``.
        """
        if target == HEAD:
            head = self.head()
            return (head,) if head is not None else ()
        if target == HEADS:
            return self.heads()
        if target == BASE:
            return ()
        if target in self._scripts:
            return (target,)
        matches = [rev for rev in self._order if rev.startswith(target)] if target else []
        if len(matches) > 1:
            raise AmbiguousRevisionError(
                f"revision prefix {target!r} is ambiguous: {self._labels(matches)}",
                migration=target,
            )
        if matches:
            return (matches[0],)
        relative = _RELATIVE_RE.match(target)
        if relative:
            return self._resolve_relative(target, relative, applied)
        raise UnknownRevisionError(f"no revision matches {target!r}", migration=target)

    def _resolve_relative(
        self, target: str, match: re.Match[str], applied: Iterable[str] | None
    ) -> tuple[str, ...]:
        anchor, sign, steps = match["anchor"], match["sign"], int(match["steps"])
        position: str | None
        if anchor:
            anchors = self.resolve(anchor, applied)
            if len(anchors) > 1:
                raise AmbiguousRevisionError(
                    f"{target!r}: {anchor!r} names several revisions", migration=target
                )
            position = anchors[0] if anchors else None
        else:
            if applied is None:
                raise UnknownRevisionError(
                    f"{target!r} is relative to the current revision, which is not known here",
                    migration=target,
                )
            current = self.current_heads(applied)
            if len(current) > 1:
                raise MultipleHeadsError(
                    f"{target!r} is ambiguous: several revisions are current:"
                    f" {self._labels(current)}",
                    heads=current,
                    migration=target,
                )
            position = current[0] if current else None
        for _ in range(steps):
            position = self._step(position, up=sign == "+", target=target)
        return (position,) if position is not None else ()

    def _step(self, position: str | None, *, up: bool, target: str) -> str | None:
        """One step along a straight line of revisions (None is the base)."""
        if up:
            nexts = self.bases() if position is None else tuple(self._children[position])
        elif position is None:
            raise UnknownRevisionError(f"{target!r} goes below the base", migration=target)
        else:
            parents = self._scripts[position].down_revisions
            if not parents:
                return None
            nexts = parents
        if len(nexts) == 1:
            return nexts[0]
        where = "the base" if position is None else self._labels([position])
        problem = "goes beyond the head" if not nexts else "crosses a branch point"
        raise UnknownRevisionError(
            f"{target!r} {problem} at {where}; name the revision instead", migration=target
        )

    # -- paths -----------------------------------------------------------------

    def upgrade_path(self, applied: Iterable[str], target: str = HEAD) -> list[Script]:
        """The scripts to run to reach ``target``: unapplied ancestors, parents first."""
        done = self._check_applied(applied)
        wanted = self._ancestors(self.resolve(target, done), inclusive=True)
        return [self._scripts[rev] for rev in self._order if rev in wanted and rev not in done]

    def downgrade_path(self, applied: Iterable[str], target: str) -> list[Script]:
        """The scripts to undo to go back to ``target`` (kept), children first.

        ``base`` undoes everything applied. Scripts without ``downgrade`` make the
        whole path refuse, before anything runs.
        """
        done = self._check_applied(applied)
        targets = self.resolve(target, done)
        for rev in targets:
            if rev not in done:
                raise RevisionError(
                    f"cannot downgrade to {self._labels([rev])}: it is not applied",
                    migration=rev,
                )
        if targets:
            keep = self._ancestors(targets, inclusive=True)
            undo = self._descendants(targets) - keep
        else:
            undo = set(done)
        path = [self._scripts[rev] for rev in reversed(self._order) if rev in undo and rev in done]
        missing = [s.revision for s in path if not s.has_downgrade]
        if missing:
            raise MissingDowngradeError(
                f"cannot downgrade to {target!r}: {self._labels(missing)}"
                f" {'defines' if len(missing) == 1 else 'define'} no downgrade()",
                migration=missing[0],
            )
        return path

    # -- helpers ---------------------------------------------------------------

    def _check_applied(self, applied: Iterable[str]) -> frozenset[str]:
        done = frozenset(applied)
        unknown = sorted(done - self._scripts.keys())
        if unknown:
            raise UnknownRevisionError(
                f"applied revision(s) {', '.join(map(repr, unknown))} have no script"
                " in the migrations folder",
                migration=unknown[0],
            )
        return done

    def _ancestors(self, revisions: Iterable[str], *, inclusive: bool) -> set[str]:
        return self._closure(revisions, lambda rev: self._scripts[rev].down_revisions, inclusive)

    def _descendants(self, revisions: Iterable[str]) -> set[str]:
        return self._closure(revisions, lambda rev: self._children[rev], inclusive=False)

    @staticmethod
    def _closure(
        revisions: Iterable[str], step: Callable[[str], Sequence[str]], inclusive: bool
    ) -> set[str]:
        start = list(revisions)
        seen: set[str] = set(start) if inclusive else set()
        stack = [nxt for rev in start for nxt in step(rev)]
        while stack:
            rev = stack.pop()
            if rev not in seen:
                seen.add(rev)
                stack.extend(step(rev))
        return seen

    def _labels(self, revisions: Iterable[str]) -> str:
        return ", ".join(self._scripts[rev].label for rev in revisions)

    def _topological_order(self) -> list[str]:
        """Parents before children; ties broken by the order scripts were given in."""
        position = {rev: i for i, rev in enumerate(self._scripts)}
        waiting = {rev: len(set(s.down_revisions)) for rev, s in self._scripts.items()}
        ready = [(position[rev], rev) for rev, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, rev = heapq.heappop(ready)
            order.append(rev)
            for child in self._children[rev]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, (position[child], child))
        if len(order) < len(self._scripts):
            self._raise_cycle(set(self._scripts) - set(order))
        return order

    def _raise_cycle(self, stuck: set[str]) -> None:
        """Walk parents inside the unorderable scripts until one repeats: that is a cycle."""
        rev = min(stuck, key=list(self._scripts).index)
        path: list[str] = []
        while rev not in path:
            path.append(rev)
            rev = next(p for p in self._scripts[rev].down_revisions if p in stuck)
        cycle = tuple(reversed(path[path.index(rev):]))
        loop = " -> ".join(self._scripts[r].label for r in (*cycle, cycle[0]))
        raise CycleError(
            f"revisions form a cycle: {loop}", cycle=cycle, migration=cycle[0]
        )


__all__ = ["BASE", "HEAD", "HEADS", "RevisionGraph"]
