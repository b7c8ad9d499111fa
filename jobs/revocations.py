"""The revocation outbox's cron: retry the grants of removed mailboxes that the provider did not revoke yet.

Rare work (one row per removed mailbox whose first try failed), so the cron tries the due rows itself
rather than enqueuing a job each; the claim in statemachine/services/removal.py keeps two workers apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from statemachine.services.removal import attempt_revocation, due_revocations
from statemachine.services.runtime import Runtime


async def sweep_revocations(ctx: Mapping[str, Any]) -> dict[str, int]:
    runtime: Runtime = ctx["runtime"]
    async with runtime.sessionmaker() as session:
        due = await due_revocations(session)
    results: dict[str, int] = {}
    for revocation_id in due:
        result = await attempt_revocation(
            runtime.sessionmaker, runtime.http, runtime.cipher, runtime.settings, revocation_id, datetime.now(UTC)
        )
        results[result] = results.get(result, 0) + 1
    return results
