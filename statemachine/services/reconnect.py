"""Finishing a reconnect: the new grant is stored and `reconnected` fired in one transaction.

The consenting account must be the mailbox's own: the provider subject (the id_token claims its spec names, Microsoft's
tid and oid) remembered from an earlier connect or refresh, or, while none is stored and the provider's email is
trustworthy (Google's verified email, never Microsoft's), an email equal to the mailbox address. Any other account
stores nothing and leaves a `reconnect_rejected` history row.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.core.access_tokens import seal_access_token
from statemachine.core.machine import Occurrence
from statemachine.core.secrets import TokenCipher
from statemachine.core.states import Event
from statemachine.providers import registry
from statemachine.services.cycle import Grant
from statemachine.services.unit_of_work import EventContext, Outcome, apply_event
from statemachine.store import repository
from statemachine.store.db import Sessionmaker
from statemachine.store.models import Mailbox, Revocation


class ConsentGrant(Grant, Protocol):
    """What a reconnect reads of a code exchange's answer (read-only: the adapter's TokenGrant is frozen).

    Beyond a refresh's answer, it says which account consented by email too (from the checked id_token).
    """

    @property
    def email(self) -> str | None: ...
    @property
    def email_verified(self) -> bool | None: ...


class ReconnectError(Exception):
    """The grant cannot be used (no refresh token came back); nothing was stored."""


@dataclass(frozen=True)
class ReconnectResult:
    accepted: bool
    expected_account: str
    outcome: Outcome
    unknown_account: bool = False  # refused because the mailbox's account is not known yet, whoever signed in


def account_mismatch(mailbox: Mailbox, grant: ConsentGrant) -> str | None:
    """Why the grant is not the mailbox's own account, in words for its history; None when it is."""
    if mailbox.provider_subject:
        if grant.subject == mailbox.provider_subject:
            return None
        return f"Consent came from another account (signed in as {_signed_in_as(grant)}), not {mailbox.address}'s"
    if not registry.get(mailbox.provider).email_identifies_account:
        return (
            f"The account of {mailbox.address} is not known yet (it is learnt from the first successful refresh), "
            f"and {registry.label(mailbox.provider)} email addresses cannot prove it"
        )
    if grant.email_verified and grant.email and grant.email.strip().lower() == mailbox.address:
        return None
    return f"Consent came from {_signed_in_as(grant)}, not {mailbox.address}"


def _signed_in_as(grant: ConsentGrant) -> str:
    return grant.email or "an account without an email"


def _store_grant(cipher: TokenCipher, mailbox: Mailbox, grant: ConsentGrant, now: datetime) -> None:
    assert grant.refresh_token is not None
    mailbox.refresh_token_ciphertext = cipher.encrypt(grant.refresh_token, mailbox_id=mailbox.id, role="refresh")
    sealed = seal_access_token(cipher, mailbox.id, grant.access_token, grant.expires_in, now)
    mailbox.access_token_ciphertext, mailbox.access_token_expires_at = sealed
    mailbox.last_refreshed_at = now
    mailbox.provider_subject = mailbox.provider_subject or grant.subject
    mailbox.granted_scope = grant.scope  # the new consent's, which may be narrower than the old one
    mailbox.removed_at = None  # connecting a removed mailbox again revives it
    mailbox.grant_generation += 1  # a cycle still refreshing the old grant must not overwrite this one


async def _cancel_revocations(session: AsyncSession, mailbox_id: int, now: datetime) -> None:
    """A removed mailbox connected again: revoking its old grant now could end the new one (Google revokes
    the whole grant of the app), so a pending revocation is dropped and its token erased."""
    values = {"status": "failed", "token_ciphertext": None, "done_at": now, "last_error": "connected again"}
    statement = update(Revocation).where(Revocation.mailbox_id == mailbox_id, Revocation.status == "pending")
    await session.execute(statement.values(**values))


async def complete_reconnect(
    sessionmaker: Sessionmaker, cipher: TokenCipher, events: EventContext, mailbox_id: int, user_id: int,
    grant: ConsentGrant, actor: str,
) -> ReconnectResult:  # fmt: skip
    """Store the grant and fire `reconnected`, or record `reconnect_rejected`; raise UnknownMailboxError
    when the mailbox is not this user's (the caller answers 404), ReconnectError when the grant is unusable."""
    if not grant.refresh_token:
        raise ReconnectError("the provider did not issue a refresh token; please try again")
    async with sessionmaker() as session, session.begin():
        mailbox = await repository.lock_mailbox(session, mailbox_id)
        if mailbox.user_id != user_id:
            raise repository.UnknownMailboxError(mailbox_id)
        now = datetime.now(UTC)
        mismatch = account_mismatch(mailbox, grant)
        if mismatch is not None:
            occurrence = Occurrence(at=now, actor=actor, note=f"{mismatch}; nothing was stored.")
            outcome = await apply_event(session, mailbox, Event.RECONNECT_REJECTED, occurrence, events)
            unknown = not (mailbox.provider_subject or registry.get(mailbox.provider).email_identifies_account)
            return ReconnectResult(False, mailbox.address, outcome, unknown_account=unknown)
        if mailbox.removed_at is not None:
            await _cancel_revocations(session, mailbox.id, now)
        _store_grant(cipher, mailbox, grant, now)
        occurrence = Occurrence(at=now, actor=actor, expires_in=grant.expires_in, jitter=random.random())
        outcome = await apply_event(session, mailbox, Event.RECONNECTED, occurrence, events)
        return ReconnectResult(True, mailbox.address, outcome)
