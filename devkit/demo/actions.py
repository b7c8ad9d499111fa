"""What the sandbox panel and `tokenwarden sandbox` do, in one place, with the sentence that reports it.

Why "refresh now" after breaking a mailbox: a healthy mailbox's next refresh can be two minutes away,
and a visitor who just broke it wants to see the consequence. So breaking an active mailbox also
records an operator's "retry now" (a real event, in its history with the actor), which makes it due
at the worker's next scan. A disconnected mailbox is left alone: only a reconnect or an explicit
retry brings it back.
"""

from __future__ import annotations

from sqlalchemy import select

from devkit.demo.control import SandboxControl, grant_of
from devkit.demo.datadir import DemoError
from devkit.demo.faults import MAILBOX_FAULTS, MAX_OUTAGE_MINUTES
from devkit.sandbox import DIALECT_MOUNTS
from statemachine.core.states import Event, State
from statemachine.services.operations import operator_action
from statemachine.services.runtime import Runtime
from statemachine.store.models import Mailbox

MAX_COUNT = 1000


def check_count(count: int | None) -> None:
    if count is not None and not 1 <= count <= MAX_COUNT:
        raise DemoError(f"count must be a whole number from 1 to {MAX_COUNT} (leave it out for 'until cleared')")


async def break_mailbox(
    runtime: Runtime, control: SandboxControl, mailbox_id: int, mode: str, count: int | None, actor: str
) -> str:
    """Set the fault on the mailbox's refresh token, and make an active mailbox due now."""
    if mode not in MAILBOX_FAULTS:
        raise DemoError(f"mode must be one of: {', '.join(MAILBOX_FAULTS)}")
    check_count(count)
    provider, token = await grant_of(runtime.sessionmaker, runtime.cipher, mailbox_id)
    control = control.of(provider)
    await control.break_mailbox(token, mode, count)
    words = MAILBOX_FAULTS[mode][0]
    lasting = f"for its next {count} token requests" if count else "until the fault is cleared"
    said = f"Mailbox {mailbox_id}: {control.name} now answers {words} {lasting}."
    async with runtime.sessionmaker() as session:
        state = await session.scalar(select(Mailbox.state).where(Mailbox.id == mailbox_id))
    if state == State.DISCONNECTED:
        return f"{said} It is disconnected, so nothing refreshes it until it is reconnected or retried."
    note = f"Demo: {control.name} was told to answer {words}; refreshing now to show what happens."
    await operator_action(runtime.sessionmaker, runtime.events, mailbox_id, Event.OPS_RETRY_NOW, actor, note)
    return f"{said} It is refreshed at the worker's next scan (a 'retry now' in its history): watch it change."


async def clear(runtime: Runtime, control: SandboxControl, mailbox_id: int | None) -> str:
    """Clear one mailbox's fault, or every fault (provider-wide ones included)."""
    if mailbox_id is None:
        cleared = sum([await control.of(name).clear() for name in DIALECT_MOUNTS])
        return f"Cleared {cleared} fault{'s' if cleared != 1 else ''}: the sandbox providers answer normally again."
    provider, token = await grant_of(runtime.sessionmaker, runtime.cipher, mailbox_id)
    cleared = await control.of(provider).clear(token)
    if not cleared:
        return f"Mailbox {mailbox_id} had no fault."
    return f"Mailbox {mailbox_id}'s fault is cleared: its next refresh succeeds."


async def outage(control: SandboxControl, minutes: float) -> str:
    if not 0 < minutes <= MAX_OUTAGE_MINUTES:
        raise DemoError(f"minutes must be above 0 and at most {MAX_OUTAGE_MINUTES}")
    await control.outage(minutes)
    return (
        f"Outage: every token request to {control.name} gets a 503 for {minutes:g} min. Watch /ops: an incident "
        "opens once enough of its mailboxes fail; they keep retrying without escalating, and no user is emailed."
    )


async def misconfigure(control: SandboxControl) -> str:
    await control.misconfigure()
    return (
        f"{control.name.capitalize()} now rejects our client secret (invalid_client) for every request, as after a "
        "rotated secret. Mailboxes go to retrying and no further, no user is emailed, and /ops shows the incident. "
        "Clear the faults to fix it."
    )
