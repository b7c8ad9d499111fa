"""Prometheus metrics of the worker process, served on TOKENWARDEN_METRICS_PORT.

Counters and histograms count what this process did; the gauges (mailboxes by state, outbox backlog,
open incidents) are read from PostgreSQL by every worker process on its own (`refresh_gauges`), so any
one worker's scrape tells the whole truth.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

from statemachine.core.states import State
from statemachine.services.cycle import CycleResult
from statemachine.store import incidents, scheduling
from statemachine.store.db import Sessionmaker
from statemachine.store.incidents import OpenedIncident

logger = logging.getLogger(__name__)

GAUGE_INTERVAL_SECONDS = 15.0

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
OPEN_INCIDENTS = Gauge("tokenwarden_open_incidents", "Open provider incidents.", ["provider"])
INCIDENTS_OPENED = Counter("tokenwarden_incidents_opened_total", "Provider incidents opened.", ["provider"])
WEBHOOKS = Counter("tokenwarden_webhook_deliveries_total", "Webhook delivery attempts by result.", ["result"])
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "tokenwarden_webhook_endpoints_disabled_total", "Webhook endpoints disabled after failing too long."
)
OUTBOX_BACKLOG = Gauge("tokenwarden_outbox_pending", "Notifications waiting in the outbox (the email backlog).")
EMAILS = Counter("tokenwarden_emails_total", "Emails handed to SMTP, by kind and result.", ["kind", "result"])
FAILURE_TO_EMAIL = Histogram(
    "tokenwarden_failure_to_email_seconds",
    "From the start of a failure episode to the email about it being sent.",
    buckets=(60, 300, 900, 1800, 3600, 7200, 21600, 86400),
)


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


def record_incident_opened(incident: OpenedIncident) -> None:
    INCIDENTS_OPENED.labels(provider=incident.provider).inc()
    OPEN_INCIDENTS.labels(provider=incident.provider).set(1)


async def refresh_gauges_once(sessionmaker: Sessionmaker) -> None:
    async with sessionmaker() as session:
        states = await scheduling.mailboxes_by_state(session)
        backlog = await scheduling.outbox_backlog(session)
        open_now = await incidents.open_counts(session)
    for state in State:
        MAILBOXES.labels(state=state.value).set(states.get(state.value, 0))
    OUTBOX_BACKLOG.set(backlog)
    for provider in set(open_now) | {labels[0] for labels in _label_sets(OPEN_INCIDENTS)}:
        OPEN_INCIDENTS.labels(provider=provider).set(open_now.get(provider, 0))


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    return [tuple(sample.labels.values()) for metric in gauge.collect() for sample in metric.samples]


async def refresh_gauges(sessionmaker: Sessionmaker, interval: float = GAUGE_INTERVAL_SECONDS) -> None:
    """Keep the gauges current until cancelled; a failed read is logged and tried again next time."""
    while True:
        try:
            await refresh_gauges_once(sessionmaker)
        except Exception:
            logger.exception("could not refresh the gauges", extra={"at": datetime.now(UTC)})
        await asyncio.sleep(interval)
