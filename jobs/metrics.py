"""The worker's own Prometheus metrics (emails, incidents opened), served on TOKENWARDEN_METRICS_PORT.

The cycle counters and the fleet gauges every process shares live in statemachine/services/metrics.py;
each worker keeps those gauges current from PostgreSQL on its own (`refresh_gauges`), so any one
worker's scrape tells the whole truth.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram

from statemachine.services.metrics import OPEN_INCIDENTS, refresh_gauges_once
from statemachine.store.db import Sessionmaker
from statemachine.store.incidents import OpenedIncident

logger = logging.getLogger(__name__)

GAUGE_INTERVAL_SECONDS = 15.0

INCIDENTS_OPENED = Counter("tokenwarden_incidents_opened_total", "Provider incidents opened.", ["provider"])
WEBHOOKS = Counter("tokenwarden_webhook_deliveries_total", "Webhook delivery attempts by result.", ["result"])
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "tokenwarden_webhook_endpoints_disabled_total", "Webhook endpoints disabled after failing too long."
)
EMAILS = Counter("tokenwarden_emails_total", "Emails handed to SMTP, by kind and result.", ["kind", "result"])
FAILURE_TO_EMAIL = Histogram(
    "tokenwarden_failure_to_email_seconds",
    "From the start of a failure episode to the email about it being sent, by email kind.",
    ["kind"],
    buckets=(60, 120, 300, 900, 1800, 3600, 7200, 21600, 86400),
)


def record_incident_opened(incident: OpenedIncident) -> None:
    INCIDENTS_OPENED.labels(provider=incident.provider).inc()
    OPEN_INCIDENTS.labels(provider=incident.provider).set(1)


async def refresh_gauges(
    sessionmaker: Sessionmaker, scan_interval_seconds: float, interval: float = GAUGE_INTERVAL_SECONDS
) -> None:
    """Keep the gauges current until cancelled; a failed read is logged and tried again next time."""
    while True:
        try:
            await refresh_gauges_once(sessionmaker, datetime.now(UTC), scan_interval_seconds)
        except Exception:
            logger.exception("could not refresh the gauges", extra={"at": datetime.now(UTC)})
        await asyncio.sleep(interval)
