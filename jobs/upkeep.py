"""Housekeeping crons: close recovered incidents, roll up and prune outcomes, prune expired web rows, fold counts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jobs import timed
from statemachine.services.runtime import Runtime
from statemachine.store import counts, expired, incidents, outcome_minutes


async def check_incidents(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Close the incidents whose cause passed; the mailboxes they held are retried soon, each at its moment."""
    runtime: Runtime = ctx["runtime"]
    closed = await incidents.close_recovered(runtime.sessionmaker, runtime.settings.incidents, datetime.now(UTC))
    pulled = [due for incident in closed for due in incident.pulled]
    horizon = runtime.settings.exact_timing_seconds
    timed_jobs = await timed.refresh_at(ctx["redis"], pulled, horizon, datetime.now(UTC)) if pulled else 0
    return {"closed": len(closed), "timed": timed_jobs}


async def prune_outcomes(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Keep 48 h of cycle outcomes and of their per-minute rollup: enough for the incident window and the 24 h pages."""
    runtime: Runtime = ctx["runtime"]
    now = datetime.now(UTC)
    deleted = await incidents.prune_outcomes(runtime.sessionmaker, now)
    return {"deleted": deleted, "minutes_deleted": await outcome_minutes.prune(runtime.sessionmaker, now)}


async def roll_up_outcomes(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Count the finished minutes' outcomes for /ops and the summary; a run another worker is doing is skipped."""
    runtime: Runtime = ctx["runtime"]
    done = await outcome_minutes.roll_up(runtime.sessionmaker, datetime.now(UTC))
    return {"chunks": done.chunks, "skipped": int(done.rolled_up_to is None)}


async def fold_mailbox_counts(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Keep the counts the gauges and /ops sum short: one row per (provider, state) plus the latest changes."""
    runtime: Runtime = ctx["runtime"]
    return {"folded": await counts.fold(runtime.sessionmaker)}


async def purge_expired_web_rows(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Delete web sessions, sign-in links and OAuth states a day after they expired."""
    runtime: Runtime = ctx["runtime"]
    return await expired.purge_expired(runtime.sessionmaker, datetime.now(UTC))
