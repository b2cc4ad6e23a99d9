"""A picture of a demo run: every request's latency over time, with the update's phases.

The top panel shows the whole run; the bottom one the seconds around the held
commit, where a pause would show. Written as SVG with no plotting library, so the
demo needs nothing more than the application itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

WIDTH, PANEL, MARGIN = 1100, 300, 60
COLOURS = {"login": "#1f77b4", "order": "#2ca02c", "read": "#9467bd", "failed": "#d62728"}
PHASE_COLOURS = {"load new code": "#ffbf00", "pass": "#c7dcef", "catch-up": "#fdd0a2",
                 "stage commit": "#c7e9c0", "writes held": "#f4a6a6", "swap": "#b39ddb"}


@dataclass(frozen=True)
class Point:
    """One request: when it started, how long it took, what it was."""

    at: float
    seconds: float
    kind: str


def draw(path: Path, requests: Iterable[Sequence[Any]], phases: Sequence[dict[str, Any]],
         update: tuple[float, float]) -> Path:
    """Write the picture of ``requests`` (kind, started, ended, status) and ``phases``."""
    points = [Point(start, end - start, kind if 200 <= status < 300 else "failed")
              for kind, start, end, status in requests]
    if not points:
        raise ValueError("no requests to draw")
    origin = min(p.at for p in points)
    held = next((ph for ph in phases if ph["name"] == "writes held"), None)
    centre = (held["start"] + held["end"]) / 2 if held else (update[0] + update[1]) / 2
    panels = [
        ("the whole run", (origin, max(p.at + p.seconds for p in points))),
        ("around the held commit", (centre - 3.0, centre + 3.0)),
    ]
    top = 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
             f'height="{top + len(panels) * (PANEL + 70)}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{MARGIN}" y="24" font-size="15">request latency during a live update '
             f'(log scale; each dot is a request, at its start)</text>']
    for title, window in panels:
        parts.extend(_panel(title, window, origin, top, points, phases))
        top += PANEL + 70
    parts.append("</svg>")
    path.write_text("\n".join(parts))
    return path


def _panel(title: str, window: tuple[float, float], origin: float, top: int,
           points: list[Point], phases: Sequence[dict[str, Any]]) -> list[str]:
    start, end = window
    span = max(end - start, 1e-6)
    inner = WIDTH - 2 * MARGIN
    low, high = 1.0, max(2000.0, max(p.seconds * 1000 for p in points) * 1.2)

    def x(t: float) -> float:
        return MARGIN + (t - start) / span * inner

    def y(ms: float) -> float:
        ms = min(max(ms, low), high)
        return top + PANEL - math.log10(ms / low) / math.log10(high / low) * PANEL

    out = [f'<text x="{MARGIN}" y="{top - 6}" font-weight="bold">{escape(title)}</text>']
    for phase in _bands(phases):
        left, right = max(phase["start"], start), min(phase["end"], end)
        if right <= left:
            continue
        width = max(x(right) - x(left), 1.5)
        colour = PHASE_COLOURS.get(phase["kind"], "#eeeeee")
        out.append(f'<rect x="{x(left):.1f}" y="{top}" width="{width:.1f}" height="{PANEL}" '
                   f'fill="{colour}" opacity="0.7"><title>{escape(phase["name"])} '
                   f'{(phase["end"] - phase["start"]) * 1000:.0f} ms</title></rect>')
        if width > 40 or phase["kind"] in ("writes held", "load new code"):
            out.append(f'<text x="{x(left) + 2:.1f}" y="{top + 12}" font-size="10" '
                       f'fill="#333">{escape(phase["name"])}</text>')
    for ms in (1, 10, 100, 250, 500, 1000):
        if low <= ms <= high:
            out.append(f'<line x1="{MARGIN}" x2="{WIDTH - MARGIN}" y1="{y(ms):.1f}" y2="{y(ms):.1f}" '
                       f'stroke="#999" stroke-dasharray="{"6,3" if ms in (250, 500) else "2,4"}"/>')
            out.append(f'<text x="{MARGIN - 6}" y="{y(ms) + 4:.1f}" text-anchor="end">{ms} ms</text>')
    for p in points:
        if start <= p.at <= end:
            out.append(f'<circle cx="{x(p.at):.1f}" cy="{y(p.seconds * 1000):.1f}" r="1.6" '
                       f'fill="{COLOURS.get(p.kind, "#555")}" opacity="0.6"/>')
    out.append(f'<rect x="{MARGIN}" y="{top}" width="{inner}" height="{PANEL}" fill="none" stroke="#333"/>')
    ticks = _ticks(span)
    t = math.ceil((start - origin) / ticks) * ticks + origin
    while t <= end:
        out.append(f'<text x="{x(t):.1f}" y="{top + PANEL + 16}" text-anchor="middle">'
                   f'{t - origin:.{0 if ticks >= 1 else 1}f} s</text>')
        t += ticks
    legend_x = MARGIN
    for kind, colour in [*COLOURS.items(), *PHASE_COLOURS.items()]:
        out.append(f'<rect x="{legend_x}" y="{top + PANEL + 28}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{legend_x + 14}" y="{top + PANEL + 37}">{escape(kind)}</text>')
        legend_x += 24 + 7 * len(kind)
    return out


def _bands(phases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The phases as drawn: each pass, catch-up round, the held commit, the swap."""
    bands = []
    for phase in phases:
        name = phase["name"]
        kind = "pass" if name.startswith("pass") else name
        if kind in PHASE_COLOURS:
            bands.append(dict(phase, kind=kind))
    return bands


def _ticks(span: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 20, 30, 60, 120):
        if span / step <= 12:
            return step
    return 300
