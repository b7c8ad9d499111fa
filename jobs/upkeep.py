"""Housekeeping crons: close recovered provider incidents, prune old cycle outcomes, fold the mailbox counts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from statemachine.services.runtime import Runtime
from statemachine.store import counts, incidents


async def check_incidents(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Close the incidents whose provider recovered; their waiting mailboxes are retried soon."""
    runtime: Runtime = ctx["runtime"]
    closed = await incidents.close_recovered(runtime.sessionmaker, runtime.settings.incidents, datetime.now(UTC))
    return {"closed": len(closed)}


async def prune_outcomes(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Keep 48 h of cycle outcomes: enough for the incident window and the 24 h success rate."""
    runtime: Runtime = ctx["runtime"]
    return {"deleted": await incidents.prune_outcomes(runtime.sessionmaker, datetime.now(UTC))}


async def fold_mailbox_counts(ctx: Mapping[str, Any]) -> dict[str, int]:
    """Keep the counts the gauges and /ops sum short: one row per (provider, state) plus the latest changes."""
    runtime: Runtime = ctx["runtime"]
    return {"folded": await counts.fold(runtime.sessionmaker)}
