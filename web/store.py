"""The web's own rows: sessions, one-time login tokens and OAuth reconnect states.

Single use is one conditional UPDATE ... RETURNING (`used_at IS NULL AND expires_at > now`), so two
requests racing with the same link or `state` cannot both win. Only SHA-256 hashes of the secrets
are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.store.models import User
from web.tables import LoginToken, OAuthState, WebSession

STALE_AFTER = timedelta(days=1)  # expired rows are kept a day for the "link already used/expired" messages


@dataclass(frozen=True)
class SessionUser:
    """A live session and its user: what every signed-in request knows about who asks."""

    session_id: int
    user_id: int
    email: str
    name: str | None
    is_admin: bool


@dataclass(frozen=True)
class PendingState:
    mailbox_id: int
    verifier_ciphertext: bytes


async def add_login_token(session: AsyncSession, user_id: int, token_hash: str, expires_at: datetime) -> None:
    session.add(LoginToken(token_hash=token_hash, user_id=user_id, expires_at=expires_at))
    await session.flush()


async def login_token_user(session: AsyncSession, token_hash: str, now: datetime) -> User | None:
    """The user a still-usable login token signs in, without using it up (for the confirmation page)."""
    statement = (
        select(User)
        .join(LoginToken, LoginToken.user_id == User.id)
        .where(LoginToken.token_hash == token_hash, LoginToken.used_at.is_(None), LoginToken.expires_at > now)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def use_login_token(session: AsyncSession, token_hash: str, now: datetime) -> int | None:
    """Use the token up and return its user id; None when unknown, used or expired."""
    statement = (
        update(LoginToken)
        .where(LoginToken.token_hash == token_hash, LoginToken.used_at.is_(None), LoginToken.expires_at > now)
        .values(used_at=now)
        .returning(LoginToken.user_id)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def add_session(session: AsyncSession, user_id: int, token_hash: str, expires_at: datetime) -> int:
    row = WebSession(token_hash=token_hash, user_id=user_id, expires_at=expires_at)
    session.add(row)
    await session.flush()
    return row.id


async def live_session(session: AsyncSession, token_hash: str, now: datetime) -> SessionUser | None:
    statement = (
        select(WebSession.id, User.id, User.email, User.name, User.is_admin)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == token_hash, WebSession.revoked_at.is_(None), WebSession.expires_at > now)
    )
    row = (await session.execute(statement)).one_or_none()
    return SessionUser(*row) if row is not None else None


async def revoke_session(session: AsyncSession, session_id: int, now: datetime) -> None:
    statement = update(WebSession).where(WebSession.id == session_id, WebSession.revoked_at.is_(None))
    await session.execute(statement.values(revoked_at=now))


async def set_flash(session: AsyncSession, session_id: int, kind: str, text: str) -> None:
    """A one-time message for the session's next page (after a redirect)."""
    statement = update(WebSession).where(WebSession.id == session_id).values(flash_kind=kind, flash_text=text)
    await session.execute(statement)


async def take_flash(session: AsyncSession, session_id: int) -> tuple[str, str] | None:
    statement = select(WebSession.flash_kind, WebSession.flash_text).where(WebSession.id == session_id)
    row = (await session.execute(statement.with_for_update())).one_or_none()
    if row is None or row.flash_text is None:
        return None
    cleared = update(WebSession).where(WebSession.id == session_id).values(flash_kind=None, flash_text=None)
    await session.execute(cleared)
    return row.flash_kind or "info", row.flash_text


async def add_state(
    session: AsyncSession, state_hash: str, session_id: int, mailbox_id: int, provider: str, verifier: bytes,
    expires_at: datetime,
) -> None:  # fmt: skip
    row = OAuthState(state_hash=state_hash, session_id=session_id, mailbox_id=mailbox_id, provider=provider,
                     verifier_ciphertext=verifier, expires_at=expires_at)  # fmt: skip
    session.add(row)
    await session.flush()


async def use_state(
    session: AsyncSession, state_hash: str, session_id: int, provider: str, now: datetime
) -> PendingState | None:
    """Use up a reconnect state issued to this session for this provider; None if it cannot be used."""
    statement = (
        update(OAuthState)
        .where(
            OAuthState.state_hash == state_hash,
            OAuthState.session_id == session_id,
            OAuthState.provider == provider,
            OAuthState.used_at.is_(None),
            OAuthState.expires_at > now,
        )
        .values(used_at=now)
        .returning(OAuthState.mailbox_id, OAuthState.verifier_ciphertext)
    )
    row = (await session.execute(statement)).one_or_none()
    return PendingState(row.mailbox_id, row.verifier_ciphertext) if row is not None else None


async def state_problem(session: AsyncSession, state_hash: str, session_id: int, provider: str, now: datetime) -> str:
    """Why `use_state` refused: "unknown", "other_session", "used" or "expired"."""
    statement = select(OAuthState.session_id, OAuthState.provider, OAuthState.used_at, OAuthState.expires_at)
    row = (await session.execute(statement.where(OAuthState.state_hash == state_hash))).one_or_none()
    if row is None or row.provider != provider:
        return "unknown"
    if row.session_id != session_id:
        return "other_session"
    return "used" if row.used_at is not None else "expired"


async def purge_stale(session: AsyncSession, now: datetime) -> None:
    """Delete rows that expired more than a day ago, so the tables stay small without a cron job."""
    cutoff = now - STALE_AFTER
    await session.execute(delete(OAuthState).where(OAuthState.expires_at < cutoff))
    await session.execute(delete(LoginToken).where(LoginToken.expires_at < cutoff))
    await session.execute(delete(WebSession).where(WebSession.expires_at < cutoff))
