"""The web app's own tables: browser sessions, one-time sign-in links and reconnects in flight.

They live with the web app (statemachine/ never reads them) but on the same `Base.metadata`, so the
migrations create them and alembic's comparison sees them; alembic/env.py imports this module.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from statemachine.store.models import Base


class WebSession(Base):
    """A signed-in browser: the cookie holds only a random id whose hash is stored here, so sign-out ends it."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    flash_kind: Mapped[str | None] = mapped_column(String(16))
    flash_text: Mapped[str | None] = mapped_column(Text)


class LoginToken(Base):
    """A one-time sign-in link (`tokenwarden login-link`); only the hash of its secret is stored."""

    __tablename__ = "login_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class OAuthState(Base):
    """One reconnect in flight: the `state` is single-use and bound to a session and a mailbox."""

    __tablename__ = "oauth_states"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    state_hash: Mapped[str] = mapped_column(Text, unique=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("web_sessions.id", ondelete="CASCADE"), index=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    verifier_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)  # the PKCE verifier, encrypted at rest
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class ApiKey(Base):
    """A host app's key for /v1: only a SHA-256 of the key is stored; `prefix` lets people tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    prefix: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AccessTokenAudit(Base):
    """One row per access token handed out through /v1 (never the token itself)."""

    __tablename__ = "access_token_audit"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key_name: Mapped[str] = mapped_column(Text)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True)
    cycle_ran: Mapped[bool]
    at: Mapped[datetime] = mapped_column(server_default=func.now())


class ConnectSession(Base):
    """A single-use link through the provider's consent that connects a mailbox for a user.

    Bound to itself, never to a dashboard session: opening the link signs nobody in. Only hashes of the
    link's secret and of the OAuth `state` are stored; the PKCE verifier is encrypted.
    """

    __tablename__ = "connect_sessions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    public_id: Mapped[str] = mapped_column(Text, unique=True)
    link_hash: Mapped[str] = mapped_column(Text, unique=True)
    state_hash: Mapped[str | None] = mapped_column(Text, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    return_url: Mapped[str] = mapped_column(Text)
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    login_hint: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    result_mailbox_id: Mapped[int | None] = mapped_column(BigInteger)
    verifier_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    opened_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
