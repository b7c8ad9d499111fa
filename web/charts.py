"""Server-rendered SVG charts for the operator pages: the geometry here, the drawing in templates/pages/ops/_chart.html.

Why no JavaScript charting library: the pages work without JavaScript and the CSP forbids inline script
and style; three small charts need only rectangles, a line and `<title>` tooltips. Colours come from
app.css classes named after what a box shows (`k-success`, `k-degraded`, `k-incident`...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from statemachine.core.states import State

HOURS = 24
OUTCOMES = ("success", "transient", "permanent", "config")  # what a cycle can end in (busy/stale are not kept)
STATES = tuple(state.value for state in State)
TARGET = 0.95
WIDTH, LEFT, RIGHT, TOP, BOTTOM = 720.0, 44.0, 8.0, 8.0, 22.0


@dataclass(frozen=True)
class Box:
    """One rectangle: `kind` names its colour (and its data-kind), `title` is its tooltip."""

    kind: str
    title: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Chart:
    height: float
    boxes: list[Box]
    x_labels: list[tuple[float, str, str]] = field(default_factory=list)  # x, text, SVG text-anchor
    y_labels: list[tuple[float, str]] = field(default_factory=list)
    target_y: float | None = None  # the 95 % line of the cycles chart
    width: float = WIDTH
    left: float = LEFT

    @property
    def right(self) -> float:
        return self.width - RIGHT


def hour_starts(now: datetime) -> list[datetime]:
    """The 24 hours ending with the current one (which is still running), oldest first."""
    current = now.replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=HOURS - 1 - i) for i in range(HOURS)]


class _Axis:
    """Maps times onto the plot's width, clipped to [start, end]."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start, self.end = start, end
        self.span = max((end - start).total_seconds(), 1.0)

    def x(self, moment: datetime) -> float:
        moment = min(max(moment, self.start), self.end)
        return LEFT + (moment - self.start).total_seconds() / self.span * (WIDTH - LEFT - RIGHT)


def _hour_labels(axis: _Axis, hours: Sequence[datetime]) -> list[tuple[float, str, str]]:
    return [(axis.x(hour), f"{hour:%H}:00", "middle") for hour in hours[::4]]


def _stack(axis: _Axis, hour: datetime, parts: Sequence[tuple[str, float, str]], plot_height: float) -> list[Box]:
    """One hour's column: `parts` are (kind, share of the plot's height, tooltip), stacked from the bottom."""
    slot = axis.x(hour + timedelta(hours=1)) - axis.x(hour)
    x, width, floor = axis.x(hour) + slot * 0.1, slot * 0.8, TOP + plot_height
    boxes = []
    for kind, share, title in parts:
        height = share * plot_height
        floor -= height
        boxes.append(Box(kind, title, x, floor, width, height))
    return boxes


def cycles_chart(
    now: datetime, counts: Mapping[datetime, Mapping[str, int]], incidents: Sequence[Mapping[str, Any]]
) -> Chart:
    """Cycles per hour by outcome, as shares of the hour's cycles, with the 95 % line and incidents shaded."""
    hours, plot_height = hour_starts(now), 150.0
    axis = _Axis(hours[0], hours[-1] + timedelta(hours=1))
    boxes = [_incident(axis, incident, now, plot_height) for incident in incidents]
    for hour in hours:
        hour_counts = counts.get(hour, {})
        total = sum(hour_counts.get(outcome, 0) for outcome in OUTCOMES)
        if not total:
            continue
        ok = hour_counts.get("success", 0)
        head = f"{hour:%H}:00 to {hour + timedelta(hours=1):%H}:00 UTC: {ok / total:.1%} of {total} cycles succeeded"
        parts = [(o, hour_counts.get(o, 0) / total, f"{head}; {o}: {hour_counts.get(o, 0)}") for o in OUTCOMES]
        boxes += _stack(axis, hour, [part for part in parts if part[1]], plot_height)
    percent = [(TOP + plot_height * (1 - share), f"{share:.0%}") for share in (0.0, 0.5, 1.0)]
    return Chart(
        height=plot_height + TOP + BOTTOM,
        boxes=boxes,
        x_labels=_hour_labels(axis, hours),
        y_labels=percent,
        target_y=TOP + plot_height * (1 - TARGET),
    )


def _incident(axis: _Axis, incident: Mapping[str, Any], now: datetime, plot_height: float) -> Box:
    opened, closed = incident["opened_at"], incident["closed_at"] or now
    until = f"to {closed:%H:%M} UTC" if incident["closed_at"] else "still open"
    title = f"{incident['provider']} incident ({incident['cause']}) from {opened:%H:%M} UTC {until}"
    x = axis.x(opened)
    return Box("incident", title, x, TOP, max(axis.x(closed) - x, 2.0), plot_height)


def states_by_hour(
    current: Mapping[str, int],
    changes: Sequence[tuple[datetime, str, str, int]],
    created: Mapping[datetime, int],
    hours: Sequence[datetime],
) -> list[dict[str, int]]:
    """Mailboxes per state at the end of each hour, worked back from today's counts.

    `changes` are (hour, from_state, to_state, how many) from the history; a mailbox created in an hour did
    not exist before it (it starts healthy). Walking back, each hour's changes are undone in turn.
    """
    counts = {state: current.get(state, 0) for state in STATES}
    result = []
    for hour in reversed(hours):
        result.append(dict(counts))
        for at, from_state, to_state, number in changes:
            if at == hour:
                counts[to_state] = counts.get(to_state, 0) - number
                counts[from_state] = counts.get(from_state, 0) + number
        counts[State.HEALTHY.value] -= created.get(hour, 0)
    return list(reversed(result))


def states_chart(now: datetime, per_hour: Sequence[Mapping[str, int]]) -> Chart:
    """Mailboxes per state at the end of each hour, stacked (healthy at the bottom)."""
    hours, plot_height = hour_starts(now), 110.0
    axis = _Axis(hours[0], hours[-1] + timedelta(hours=1))
    top = max([sum(counts.values()) for counts in per_hour] + [1])
    boxes = []
    for hour, counts in zip(hours, per_hour, strict=True):
        when = "now" if hour == hours[-1] else f"at {hour + timedelta(hours=1):%H}:00 UTC"
        parts = [(s, counts.get(s, 0) / top, f"{when}: {counts.get(s, 0)} {s}") for s in STATES if counts.get(s, 0)]
        boxes += _stack(axis, hour, parts, plot_height)
    return Chart(
        height=plot_height + TOP + BOTTOM,
        boxes=boxes,
        x_labels=_hour_labels(axis, hours),
        y_labels=[(TOP + plot_height, "0"), (TOP, str(top))],
    )


def timeline_chart(created: datetime, history: Sequence[Mapping[str, Any]], current_state: str, now: datetime) -> Chart:
    """A mailbox's states from its creation to now, one segment per state, and a tick per history row."""
    start = min([created, *(row["at"] for row in history)])
    axis = _Axis(start, now)
    state, since = (history[0]["from_state"] if history else current_state), start
    boxes = []
    for row in history:
        if row["at"] > since:
            boxes.append(_segment(axis, state, since, row["at"]))
        state, since = row["to_state"], row["at"]
    boxes.append(_segment(axis, current_state, since, now))  # drawn even when it began a moment ago
    for row in history:
        title = f"{row['at']:%Y-%m-%d %H:%M} UTC {row['event']}: {row['from_state']} → {row['to_state']}"
        boxes.append(Box("event", title, axis.x(row["at"]) - 1, TOP + 26, 2.0, 8.0))
    return Chart(
        height=TOP + 34 + BOTTOM,
        boxes=boxes,
        x_labels=[(axis.x(start), f"{start:%Y-%m-%d %H:%M} UTC", "start"), (axis.x(now), "now", "end")],
    )


def _segment(axis: _Axis, state: str, since: datetime, until: datetime) -> Box:
    title = f"{state} from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"
    x = axis.x(since)
    return Box(state, title, x, TOP, max(axis.x(until) - x, 1.0), 24.0)
