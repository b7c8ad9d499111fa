"""Operator actions (retry now, disconnect): one event each, recorded with the operator as actor."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from statemachine.core.machine import Occurrence
from statemachine.core.states import Event
from statemachine.services.unit_of_work import EventContext, Outcome, apply_event
from statemachine.store import repository
from statemachine.store.db import Sessionmaker

OPERATOR_EVENTS = (Event.OPS_RETRY_NOW, Event.OPS_DISCONNECT)


async def operator_action(
    sessionmaker: Sessionmaker, events: EventContext, mailbox_id: int, event: Event, actor: str, note: str | None
) -> Outcome:
    """Apply an operator's event under the row lock; InvalidEventError if the state does not allow it."""
    if event not in OPERATOR_EVENTS:
        raise ValueError(f"{event} is not an operator action")
    async with sessionmaker() as session, session.begin():
        mailbox = await repository.lock_mailbox(session, mailbox_id)
        occurrence = Occurrence(at=datetime.now(UTC), actor=actor, note=note or None, jitter=random.random())
        return await apply_event(session, mailbox, event, occurrence, events)
