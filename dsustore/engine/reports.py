"""What an update did, and where a running one is: the reports a patch returns and hands out."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """Where a running update is: handed to the ``progress`` callback of a patch.

    ``scanned`` records of the pass's ``total`` (the records it reads, None when the
    storage cannot count them exactly) were read in ``elapsed`` seconds.
    """

    phase: str
    scanned: int
    migrated: int
    total: int | None
    elapsed: float

    @property
    def rate(self) -> float:
        return self.scanned / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far: the records still to read over records read per
        second. None when that cannot be said -- no total, nothing read yet, or more read
        than the total (which then was wrong: an ETA from it would be too)."""
        if self.total is None or not self.rate or self.scanned > self.total:
            return None
        return (self.total - self.scanned) / self.rate


@dataclass(frozen=True)
class Phase:
    """One step of an update and when it ran (seconds since the epoch), so that a
    picture of the application's latency can show what the update was doing."""

    name: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": round(self.start, 4), "end": round(self.end, 4)}


class Timeline(list[Phase]):
    """The phases of one update, in the order they ended."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as the phase ``name`` (recorded even when the block fails)."""
        start = time.time()
        try:
            yield
        finally:
            self.append(Phase(name, start, time.time()))

    def as_dicts(self) -> list[dict[str, Any]]:
        return [phase.as_dict() for phase in self]


@dataclass(kw_only=True)
class Figures:
    """What a stage, or a whole patch, did to the stored objects."""

    operations: list[str] = field(default_factory=list)
    #: objects changed, per class: records, and objects stored inline in records
    migrated: dict[str, int] = field(default_factory=dict)
    #: objects an operation applied to and left as they were, per class: they had the
    #: shape already (the field added, the field removed...), so nothing was written
    unchanged: dict[str, int] = field(default_factory=dict)
    #: records rewritten because they name a renamed class (in a reference or an inline object)
    references_rewritten: int = 0
    #: records written, whatever the reason (one may hold several changed objects)
    records_rewritten: int = 0
    scanned: int = 0
    validations: list[str] = field(default_factory=list)
    #: instances of removed classes nothing referenced, per class (garbage for pack)
    unreferenced_removed: dict[str, int] = field(default_factory=dict)
    duration: float = 0.0

    @property
    def objects_migrated(self) -> int:
        return sum(self.migrated.values())

    @property
    def objects_unchanged(self) -> int:
        return sum(self.unchanged.values())

    def figures(self) -> dict[str, Any]:
        """The figures, JSON-ready."""
        return {
            "operations": list(self.operations),
            "migrated": dict(self.migrated),
            "unchanged": dict(self.unchanged),
            "references_rewritten": self.references_rewritten,
            "records_rewritten": self.records_rewritten,
            "scanned": self.scanned,
            "validations": list(self.validations),
            "unreferenced_removed": dict(self.unreferenced_removed),
        }


@dataclass(kw_only=True)
class StageReport(Figures):
    """What one stage of a patch did (a migration, when a runner applies several at once)."""

    label: str | None
    #: the classes with instances once the stage has run
    classes: list[str] = field(default_factory=list)
    tid_before: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, **self.figures()}


@dataclass(kw_only=True)
class PatchReport(Figures):
    """What a patch did: returned by :meth:`Patch.commit`."""

    committed: bool
    dry_run: bool
    tid_before: str
    tid_after: str | None
    attempts: int
    extra: dict[str, Any] = field(default_factory=dict)
    stages: list[StageReport] = field(default_factory=list)
    #: objects other transactions committed during the update, migrated just before its commit
    caught_up: int = 0
    #: what the update did when: the passes, the catch-up rounds, the held commit
    phases: Timeline = field(default_factory=Timeline)

    @classmethod
    def of_stages(cls, stages: list[StageReport], **facts: Any) -> PatchReport:
        """The report of a patch: its stages' figures, summed."""
        migrated: Counter[str] = Counter()
        unchanged: Counter[str] = Counter()
        unreferenced: Counter[str] = Counter()
        for stage in stages:
            migrated.update(stage.migrated)
            unchanged.update(stage.unchanged)
            unreferenced.update(stage.unreferenced_removed)
        return cls(
            operations=[op for stage in stages for op in stage.operations],
            migrated=dict(migrated),
            unchanged=dict(unchanged),
            references_rewritten=sum(stage.references_rewritten for stage in stages),
            records_rewritten=sum(stage.records_rewritten for stage in stages),
            scanned=sum(stage.scanned for stage in stages),
            validations=[v for stage in stages for v in stage.validations],
            unreferenced_removed=dict(unreferenced),
            stages=stages,
            **facts,
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the report."""
        return {
            "committed": self.committed,
            "dry_run": self.dry_run,
            "tid_before": self.tid_before,
            "tid_after": self.tid_after,
            **self.figures(),
            "duration": round(self.duration, 3),
            "attempts": self.attempts,
            "caught_up": self.caught_up,
            "phases": self.phases.as_dicts(),
            **({"stages": [stage.as_dict() for stage in self.stages]} if len(self.stages) > 1
               else {}),
            **self.extra,
        }
