"""The arq job id a sweep gives a due outbox row, and why it changes once the row has waited too long.

arq refuses a job id it still holds, and a worker killed while running a job leaves that job and its
in-progress key in Redis until arq's in-progress timeout lapses (the longest job timeout + 10 s: about
five minutes). A job killed before it claimed its row leaves the row due and unlocked, yet every sweep's
enqueue under the same id is refused, so the row waits those minutes. Once a row has been claimable
for a stale period, the sweep adds a generation to the id: a fresh job. An extra job for a row that
another job holds does nothing (the claim guards the row), so this never sends twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func as sql


def waited_seconds(next_attempt_at: Any, locked_until: Any) -> Any:
    """SQL: seconds since the row became claimable (due, and any lock of a dead job lapsed)."""
    return sql.extract("epoch", sql.now() - sql.greatest(next_attempt_at, locked_until))


def sweep_job_id(base: str, waited: float, stale_seconds: float) -> str:
    """`base` while the row is freshly due; `base:n` after n stale periods, so a stuck job cannot hold it."""
    generation = int(max(waited, 0.0) // max(stale_seconds, 1.0))
    return base if generation == 0 else f"{base}:{generation}"
