"""Creating users and mailboxes, with the validation shared by the CLI, the bulk import and the demo."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.access_tokens import seal_access_token
from statemachine.core.policy import Policy
from statemachine.core.secrets import TokenCipher
from statemachine.providers import registry
from statemachine.store import webhooks
from statemachine.store.models import Mailbox, User

_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TOKEN = re.compile(r"^[\x20-\x7e]+$")  # OAuth tokens are printable ASCII (RFC 6749 appendix A: VSCHAR)
MAX_TOKEN_LENGTH = 4096
MAX_EXPIRES_IN = 86400 * 366
MAX_ADDRESS_LENGTH = 320
MAX_NAME_LENGTH = 200


class InvalidInputError(ValueError):
    """Input that cannot be stored; the message says which value and why, never the value if secret."""


class UnknownUserError(LookupError):
    def __init__(self, email: str) -> None:
        super().__init__(f"no user {email!r}; add one with `tokenwarden user add {email}`")


@dataclass(frozen=True)
class NewMailbox:
    """A validated mailbox to insert; tokens are plaintext until `row_values` encrypts them."""

    user_email: str
    provider: str
    address: str
    refresh_token: str
    access_token: str | None = None
    expires_in: int | None = None

    def __repr__(self) -> str:
        return f"NewMailbox(user_email={self.user_email!r}, provider={self.provider!r}, address={self.address!r})"


def normalise_email(value: object, what: str) -> str:
    # isprintable: no NUL (PostgreSQL cannot store it), no control character, no undecodable byte (a surrogate)
    if not isinstance(value, str) or len(value) > MAX_ADDRESS_LENGTH or not value.isprintable():
        raise InvalidInputError(f"{what} must be an email address")
    if not _ADDRESS.match(value.strip()):
        raise InvalidInputError(f"{what} must be an email address")
    return value.strip().lower()


def validate_provider(value: object) -> str:
    """A registered provider's name; anything else fails with one line listing the accepted names."""
    if not isinstance(value, str) or registry.find(value) is None:
        raise InvalidInputError(f"provider must be one of: {', '.join(registry.NAMES)}")
    return value


def _token(value: object, what: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TOKEN_LENGTH or value != value.strip():
        raise InvalidInputError(f"{what} must be a non-empty string without surrounding spaces")
    if not _TOKEN.match(value):
        raise InvalidInputError(f"{what} must be printable ASCII, as OAuth tokens are")
    return value


def _expires_in(value: object) -> int | None:
    """Whole seconds, at most a year; zero or less is accepted and means "unknown" (core/access_tokens.py)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value > MAX_EXPIRES_IN:
        raise InvalidInputError("expires_in must be a whole number of seconds")
    return value


def new_mailbox(
    *, user: object, provider: object, address: object, refresh_token: object, access_token: object = None,
    expires_in: object = None,
) -> NewMailbox:  # fmt: skip
    """Validate one mailbox's fields; raise InvalidInputError naming the first bad one."""
    mailbox = NewMailbox(
        user_email=normalise_email(user, "user"),
        provider=validate_provider(provider),
        address=normalise_email(address, "address"),
        refresh_token=_token(refresh_token, "refresh_token", required=True) or "",
        access_token=_token(access_token, "access_token", required=False),
        expires_in=_expires_in(expires_in),
    )
    if (mailbox.access_token is None) != (mailbox.expires_in is None):
        raise InvalidInputError("access_token and expires_in go together: give both or neither")
    return mailbox


async def add_user(session: AsyncSession, email: str, name: str | None = None, *, admin: bool = False) -> User:
    """Create a user, or raise InvalidInputError if the email is taken."""
    address = normalise_email(email, "email")
    if name is not None and (len(name) > MAX_NAME_LENGTH or not name.isprintable()):
        raise InvalidInputError(f"the name must be at most {MAX_NAME_LENGTH} printable characters")
    if await session.scalar(select(User.id).where(User.email == address)) is not None:
        raise InvalidInputError(f"a user {address!r} exists already")
    user = User(email=address, name=name, is_admin=admin)
    session.add(user)
    await session.flush()
    return user


async def user_ids(session: AsyncSession, emails: set[str], *, create: bool) -> dict[str, int]:
    """Map emails to user ids, creating the missing users when `create` (the bulk import does)."""
    if create and emails:
        await session.execute(
            insert(User).values([{"email": e} for e in sorted(emails)]).on_conflict_do_nothing(index_elements=["email"])
        )
    rows = await session.execute(select(User.email, User.id).where(User.email.in_(emails)))
    return {email: user_id for email, user_id in rows}


async def reserve_ids(session: AsyncSession, count: int) -> list[int]:
    """Take mailbox ids before inserting, so each token is encrypted bound to its own row id."""
    sequence = func.nextval("mailboxes_id_seq")
    return list((await session.scalars(select(sequence).select_from(func.generate_series(1, count)))).all())


def row_values(
    mailbox: NewMailbox, mailbox_id: int, user_id: int, cipher: TokenCipher, policy: Policy, now: datetime,
    jitter: float,
) -> dict[str, object]:  # fmt: skip
    """The insert values of one mailbox: tokens encrypted, first refresh spread out in time."""
    values: dict[str, object] = {
        "id": mailbox_id,
        "user_id": user_id,
        "provider": mailbox.provider,
        "address": mailbox.address,
        "refresh_token_ciphertext": cipher.encrypt(mailbox.refresh_token, mailbox_id=mailbox_id, role="refresh"),
        "next_refresh_at": now + timedelta(seconds=jitter * policy.refresh_lead_seconds / 2),
        "access_token_ciphertext": None,
        "access_token_expires_at": None,
    }
    if mailbox.access_token is not None:
        sealed = seal_access_token(cipher, mailbox_id, mailbox.access_token, mailbox.expires_in, now)
        values["access_token_ciphertext"], values["access_token_expires_at"] = sealed
        values["next_refresh_at"] = policy.next_refresh_at(now, mailbox.expires_in, jitter, just_refreshed=False)
    return values


async def why_not_inserted(session: AsyncSession, mailbox: NewMailbox, user_id: int) -> str:
    """Why `insert_mailboxes` skipped this mailbox, in words for the operator: it is connected, or it was
    removed. A removed mailbox comes back only through a consent (the dashboard's reconnect, or a connect
    session), which checks the account is the same one: a bare refresh token cannot prove that."""
    removed_at = await session.scalar(
        select(Mailbox.removed_at).where(
            Mailbox.user_id == user_id, Mailbox.provider == mailbox.provider, Mailbox.address == mailbox.address
        )
    )
    if removed_at is None:
        return f"{mailbox.address} is already connected for {mailbox.user_email}"
    return (
        f"{mailbox.address} was removed for {mailbox.user_email} on {removed_at:%Y-%m-%d}; connect it again from "
        "the dashboard or with a connect session, which checks the account is the same"
    )


async def insert_mailboxes(session: AsyncSession, rows: list[dict[str, object]]) -> set[int]:
    """Insert rows, skipping ones that duplicate (user, provider, address); return the inserted ids.

    Each new mailbox's `mailbox.connected` webhook is written in the same transaction.
    """
    if not rows:
        return set()
    statement = insert(Mailbox).on_conflict_do_nothing(constraint="uq_mailboxes_user_provider_address")
    inserted = set((await session.execute(statement.returning(Mailbox.id), rows)).scalars().all())
    await webhooks.queue_connected(session, sorted(inserted))
    return inserted
