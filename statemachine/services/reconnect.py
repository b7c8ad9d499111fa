"""Finishing a reconnect: the new grant is stored and `reconnected` fired in one transaction.

The consenting account must be the mailbox's own: the provider subject (Google `sub`) remembered
from an earlier connect, or, while none is stored, a verified email equal to the mailbox address.
Any other account stores nothing and leaves a `reconnect_rejected` history row.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from statemachine.core.machine import Occurrence
from statemachine.core.secrets import TokenCipher
from statemachine.core.states import Event
from statemachine.services.cycle import Grant
from statemachine.services.unit_of_work import EventContext, Outcome, apply_event
from statemachine.store import repository
from statemachine.store.db import Sessionmaker
from statemachine.store.models import Mailbox


class ConsentGrant(Grant, Protocol):
    """A code exchange's answer, with the consenting account's id_token claims."""

    @property
    def subject(self) -> str | None: ...
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


def is_own_account(mailbox: Mailbox, grant: ConsentGrant) -> bool:
    if mailbox.provider_subject:
        return grant.subject == mailbox.provider_subject
    return bool(grant.email_verified and grant.email and grant.email.strip().lower() == mailbox.address)


def _store_grant(cipher: TokenCipher, mailbox: Mailbox, grant: ConsentGrant, now: datetime) -> None:
    assert grant.refresh_token is not None
    mailbox.refresh_token_ciphertext = cipher.encrypt(grant.refresh_token, mailbox_id=mailbox.id, role="refresh")
    mailbox.access_token_ciphertext = cipher.encrypt(grant.access_token, mailbox_id=mailbox.id, role="access")
    mailbox.access_token_expires_at = now + timedelta(seconds=grant.expires_in) if grant.expires_in else None
    mailbox.last_refreshed_at = now
    mailbox.provider_subject = mailbox.provider_subject or grant.subject
    mailbox.grant_generation += 1  # a cycle still refreshing the old grant must not overwrite this one


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
        if not is_own_account(mailbox, grant):
            note = f"Consent came from {grant.email or 'another account'}, not {mailbox.address}; nothing was stored."
            occurrence = Occurrence(at=now, actor=actor, note=note)
            outcome = await apply_event(session, mailbox, Event.RECONNECT_REJECTED, occurrence, events)
            return ReconnectResult(False, mailbox.address, outcome)
        _store_grant(cipher, mailbox, grant, now)
        occurrence = Occurrence(at=now, actor=actor, expires_in=grant.expires_in, jitter=random.random())
        outcome = await apply_event(session, mailbox, Event.RECONNECTED, occurrence, events)
        return ReconnectResult(True, mailbox.address, outcome)
