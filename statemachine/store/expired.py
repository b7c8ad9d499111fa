"""Purging the web app's short-lived rows once they expired: sessions, sign-in links, OAuth states.

The tables are the web app's (web/tables.py), but the worker runs the schedule and jobs/ never imports
web/. Their names and `expires_at` column are part of the schema the migrations (this layer) own, so the
statement is written here against those names. A day's grace keeps "this link expired" answerable.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import column, delete, select, table

from statemachine.store.db import Sessionmaker

EXPIRING_TABLES = ("oauth_states", "login_tokens", "web_sessions")
GRACE = timedelta(days=1)
PURGE_BATCH = 1000


async def purge_expired(sessionmaker: Sessionmaker, now: datetime) -> dict[str, int]:
    """Delete rows that expired more than GRACE ago, in batches of short transactions; count per table."""
    deleted: dict[str, int] = {}
    for name in EXPIRING_TABLES:
        rows = table(name, column("id"), column("expires_at"))
        batch = select(rows.c.id).where(rows.c.expires_at < now - GRACE).limit(PURGE_BATCH)
        deleted[name] = 0
        while True:
            async with sessionmaker() as session, session.begin():
                purged = await session.execute(delete(rows).where(rows.c.id.in_(batch)).returning(rows.c.id))
                count = len(purged.all())
            deleted[name] += count
            if count < PURGE_BATCH:
                break
    return deleted
