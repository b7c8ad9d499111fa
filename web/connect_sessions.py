"""Connect sessions' rows: created by a host app (or the dashboard), the link used once, the `state` used once.

Single use is a row lock plus a status check in one transaction, so two browsers racing with the same
link or `state` cannot both win. Only SHA-256 hashes of the link's secret and the state's nonce are kept.
`return_url` must match an allowed URL by parsed parts: the same scheme, host and port, and a path at
or under the allowed path (never a string prefix: `https://app.example.com.evil.io` is another host).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.store.models import User
from web.signing import STATE_SECONDS
from web.tables import ConnectSession

LINK_SECONDS = STATE_SECONDS
FINAL_STATUSES = ("connected", "reconnected", "denied", "rejected", "expired", "failed")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _port(parts: SplitResult) -> int | None:
    return parts.port or _DEFAULT_PORTS.get(parts.scheme)


def return_url_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """Whether `url` is at or under one of the allowed URLs (scheme, host and port equal; path under)."""
    try:
        candidate = urlsplit(url)
        port = _port(candidate)
    except ValueError:
        return False
    if candidate.username or candidate.password or candidate.fragment or not candidate.hostname:
        return False
    for entry in allowed:
        rule = urlsplit(entry)
        same_origin = (candidate.scheme, candidate.hostname, port) == (rule.scheme, rule.hostname, _port(rule))
        base = rule.path.rstrip("/")
        if same_origin and (candidate.path == base or candidate.path.startswith(base + "/") or not base):
            return True
    return False


def with_result(return_url: str, **params: object) -> str:
    """`return_url` with the outcome added to its query (values that are None left out)."""
    parts = urlsplit(return_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(key, str(value)) for key, value in params.items() if value is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def create(
    session: AsyncSession, *, link_hash: str, user_id: int, provider: str, return_url: str, mailbox_id: int | None,
    login_hint: str | None, now: datetime,
) -> ConnectSession:  # fmt: skip
    row = ConnectSession(
        public_id=f"cs_{uuid.uuid4().hex}", link_hash=link_hash, user_id=user_id, provider=provider,
        return_url=return_url, mailbox_id=mailbox_id, login_hint=login_hint,
        expires_at=now + timedelta(seconds=LINK_SECONDS),
    )  # fmt: skip
    session.add(row)
    await session.flush()
    return row


async def lock_by(session: AsyncSession, column: Any, value: str) -> ConnectSession | None:
    statement = select(ConnectSession).where(column == value).with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


def status_of(row: ConnectSession, now: datetime) -> str:
    """What the host app is told: a final status, `expired` once the link's time is up, else `pending`."""
    if row.status in FINAL_STATUSES:
        return row.status
    return "expired" if row.expires_at <= now else "pending"


@dataclass(frozen=True)
class Finished:
    status: str
    mailbox_id: int | None


def finish(row: ConnectSession, status: str, mailbox_id: int | None, now: datetime) -> Finished:
    row.status, row.result_mailbox_id, row.finished_at = status, mailbox_id, now
    row.verifier_ciphertext = None
    return Finished(status, mailbox_id)


async def public_view(session: AsyncSession, public_id: str, now: datetime) -> dict[str, Any] | None:
    statement = select(ConnectSession, User.email).join(User, User.id == ConnectSession.user_id)
    found = (await session.execute(statement.where(ConnectSession.public_id == public_id))).one_or_none()
    if found is None:
        return None
    row, email = found
    return {
        "id": row.public_id,
        "status": status_of(row, now),
        "mailbox_id": row.result_mailbox_id,
        "user_email": email,
        "provider": row.provider,
        "return_url": row.return_url,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
    }
