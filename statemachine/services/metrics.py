"""Prometheus metrics every process exports: refresh cycles where they run, and the fleet's gauges.

Cycles are counted inside `run_cycle`, so the worker's jobs, the web app's on-demand refreshes and the
CLI count theirs alike. The gauges (mailboxes by state, overdue mailboxes, outbox backlog, open
incidents) are read from PostgreSQL by each process that serves /metrics, so any one scrape tells the
whole truth, and the web app still tells it when every worker is down (the "no refresh cycle while
mailboxes are overdue" alert needs exactly that).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from statemachine.core.states import State
from statemachine.store import counts, incidents, scheduling
from statemachine.store.db import Sessionmaker

if TYPE_CHECKING:
    from statemachine.services.cycle import CycleResult

CYCLES = Counter(
    "tokenwarden_refresh_cycles_total",
    "Refresh cycles by provider and outcome (success, transient, permanent, config, busy, stale).",
    ["provider", "outcome"],
)
REFRESH_SECONDS = Histogram(
    "tokenwarden_refresh_duration_seconds",
    "Duration of one refresh cycle, provider call and retries included.",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MAILBOXES = Gauge("tokenwarden_mailboxes", "Mailboxes by connection state.", ["state"])
OVERDUE = Gauge(
    "tokenwarden_mailboxes_overdue",
    "Mailboxes whose refresh is overdue by more than two scan intervals (no worker is keeping up).",
)
OPEN_INCIDENTS = Gauge("tokenwarden_open_incidents", "Open provider incidents.", ["provider"])
OUTBOX_BACKLOG = Gauge("tokenwarden_outbox_pending", "Notifications waiting in the outbox (the email backlog).")


def cycle_outcome(result: CycleResult) -> str:
    if result.status == "refreshed":
        return "success"
    if result.verdict is not None and result.status == "failed":
        return result.verdict.kind.value
    return result.status


def record_cycle(result: CycleResult, provider: str) -> None:
    CYCLES.labels(provider=provider, outcome=cycle_outcome(result)).inc()
    if result.status in ("refreshed", "failed"):
        REFRESH_SECONDS.labels(provider=provider).observe(result.seconds)


def overdue_after(scan_interval_seconds: float) -> timedelta:
    """How late a due refresh must be to count as overdue: two scans missed it."""
    return timedelta(seconds=2 * scan_interval_seconds)


async def refresh_gauges_once(sessionmaker: Sessionmaker, now: datetime, scan_interval_seconds: float) -> None:
    async with sessionmaker() as session:
        states = await counts.by_state(session)
        overdue = await scheduling.overdue_count(session, now - overdue_after(scan_interval_seconds))
        backlog = await scheduling.outbox_backlog(session)
        open_now = await incidents.open_counts(session)
    for state in State:
        MAILBOXES.labels(state=state.value).set(states.get(state.value, 0))
    OVERDUE.set(overdue)
    OUTBOX_BACKLOG.set(backlog)
    for provider in set(open_now) | {labels[0] for labels in _label_sets(OPEN_INCIDENTS)}:
        OPEN_INCIDENTS.labels(provider=provider).set(open_now.get(provider, 0))


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    return [tuple(sample.labels.values()) for metric in gauge.collect() for sample in metric.samples]
