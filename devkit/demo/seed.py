"""The demo data set: created once in an empty database, and handed to the sandbox providers on every start.

Why through real cycles: `statemachine.services.cycle.run_cycle` against the sandbox, with a fault for the
cycles that must fail, writes the same history rows, counters and outbox emails as the worker would
(with the actor "demo"). The cycles run with a clock set back to the story's time, so the history
reads like the last fifteen minutes of a real service. The sandbox keeps nothing between runs, so on
every start it learns each mailbox's account and current refresh token again, from the database;
grants of mailboxes disconnected for good (revoked) are left out, as Google would have forgotten them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from devkit.demo.control import SandboxControl
from devkit.demo.stories import AGE_SECONDS, USERS, Story, all_stories
from devkit.sandbox import DIALECTS
from statemachine.core.machine import Occurrence
from statemachine.core.secrets import TokenDecryptionError
from statemachine.core.states import Event, FailureKind, State
from statemachine.services import accounts
from statemachine.services.cycle import CycleDeps, run_cycle
from statemachine.services.runtime import Runtime, build_providers
from statemachine.services.unit_of_work import apply_event
from statemachine.store import repository
from statemachine.store.models import Mailbox, User

ACTOR = "demo"
DIALECTS_BY_NAME = {dialect.name: dialect for dialect in DIALECTS}
DISCONNECT_NOTE = "Demo data: an operator disconnected this mailbox (the club closed its account)."


@dataclass(frozen=True)
class SeedReport:
    created: bool
    users: int
    mailboxes: int
    skipped: int  # tokens this demo's key cannot decrypt (a database from elsewhere)


def stable_sub(address: str, provider: str = "google") -> str:
    """The sandbox account's id (Google's `sub`, Microsoft's `oid`), the same on every start (a reconnect remembers
    it)."""
    digest = hashlib.sha256(address.encode()).hexdigest()
    return str(uuid.UUID(digest[:32])) if provider == "microsoft" else str(int(digest, 16))[:21]


def account_ids(mailbox: Mailbox) -> tuple[str, str | None]:
    """The sandbox account (id, tenant) of a mailbox: from its remembered subject ("tid/oid" for Microsoft)."""
    if mailbox.provider_subject is None:
        return stable_sub(mailbox.address, mailbox.provider), None
    tenant, _, sub = mailbox.provider_subject.rpartition("/")
    return sub, tenant or None


async def prepare(runtime: Runtime, control: SandboxControl) -> SeedReport:
    """Create the data set if the database has no user yet; register every mailbox with the sandbox."""
    async with runtime.sessionmaker() as session:
        empty = not await session.scalar(select(func.count()).select_from(User))
    stories = all_stories()
    ids = await _insert(runtime, stories) if empty else {}
    skipped = await register(runtime, control)
    if empty:
        deps = _seeding_deps(runtime)
        for story in stories:
            await _play(deps, control, story, ids[story.address])
    async with runtime.sessionmaker() as session:
        users = await session.scalar(select(func.count()).select_from(User)) or 0
        mailboxes = await session.scalar(select(func.count()).select_from(Mailbox)) or 0
    return SeedReport(empty, users, mailboxes, skipped)


async def _insert(runtime: Runtime, stories: tuple[Story, ...]) -> dict[str, int]:
    """Users and mailboxes in one transaction; each mailbox gets a fresh sandbox refresh token."""
    now = datetime.now(UTC)
    async with runtime.sessionmaker() as session, session.begin():
        user_ids = {email: (await accounts.add_user(session, email, name, admin=op)).id for email, name, op in USERS}
        ids = await accounts.reserve_ids(session, len(stories))
        rows = []
        for mailbox_id, story in zip(ids, stories, strict=True):
            mailbox = accounts.new_mailbox(
                user=story.owner, provider=story.provider, address=story.address,
                refresh_token=DIALECTS_BY_NAME[story.provider].new_refresh_token(),
            )  # fmt: skip
            owner, policy = user_ids[story.owner], runtime.settings.policy
            row = accounts.row_values(mailbox, mailbox_id, owner, runtime.cipher, policy, now, random.random())
            rows.append({**row, "created_at": now - timedelta(seconds=AGE_SECONDS)})
        await accounts.insert_mailboxes(session, rows)
    return {story.address: mailbox_id for mailbox_id, story in zip(ids, stories, strict=True)}


async def register(runtime: Runtime, control: SandboxControl) -> int:
    """Teach the sandbox every mailbox's account and current refresh token; returns how many were skipped."""
    async with runtime.sessionmaker() as session:
        rows = (await session.execute(select(Mailbox).order_by(Mailbox.id))).scalars().all()
    skipped = 0
    for mailbox in rows:
        sub, tenant = account_ids(mailbox)
        here = control.of(mailbox.provider)
        await here.add_account(mailbox.address, sub, tenant)
        if mailbox.state == State.DISCONNECTED and mailbox.failure_kind == FailureKind.PERMANENT:
            continue  # revoked: the grant is gone, only a reconnect brings a new one
        try:
            token = runtime.cipher.decrypt(mailbox.refresh_token_ciphertext, mailbox_id=mailbox.id, role="refresh")
        except TokenDecryptionError:
            skipped += 1
            continue
        await here.add_grant(sub, token)
    return skipped


def _seeding_deps(runtime: Runtime) -> CycleDeps:
    """One request per cycle (no in-cycle retries) and no incident guard: each step is exactly one outcome."""
    single = dataclasses.replace(runtime.settings, retry_tries=1)
    return CycleDeps(
        runtime.sessionmaker, runtime.statements, runtime.shared, build_providers(single, runtime.http),
        runtime.cipher, runtime.events, runtime.settings.lease_seconds,
    )  # fmt: skip


async def _play(deps: CycleDeps, control: SandboxControl, story: Story, mailbox_id: int) -> None:
    """Run the story's cycles at their times, then leave its live fault in place."""
    start = datetime.now(UTC)
    token = await _token(deps, mailbox_id)  # the first: the sandbox applies a fault to what it rotated into
    control = control.of(story.provider)
    for step in story.steps:
        if step.fault is not None:
            await control.break_mailbox(token, step.fault, count=1)
        at = start - timedelta(seconds=step.ago)
        await run_cycle(dataclasses.replace(deps, clock=_stopped_at(at)), mailbox_id, actor=ACTOR)
    if story.operator_disconnect_ago is not None:
        await _disconnect(deps, mailbox_id, start - timedelta(seconds=story.operator_disconnect_ago))
    if story.leave is not None:
        await control.break_mailbox(token, story.leave, count=story.leave_count)


def _stopped_at(moment: datetime) -> Callable[[], datetime]:
    """A clock that always says `moment`: a seeding cycle happens at its story's time."""
    return lambda: moment


async def _token(deps: CycleDeps, mailbox_id: int) -> str:
    async with deps.sessionmaker() as session:
        ciphertext = await session.scalar(select(Mailbox.refresh_token_ciphertext).where(Mailbox.id == mailbox_id))
    assert ciphertext is not None  # inserted just before
    return deps.cipher.decrypt(ciphertext, mailbox_id=mailbox_id, role="refresh")


async def _disconnect(deps: CycleDeps, mailbox_id: int, at: datetime) -> None:
    async with deps.sessionmaker() as session, session.begin():
        mailbox = await repository.lock_mailbox(session, mailbox_id)
        occurrence = Occurrence(at=at, actor=ACTOR, note=DISCONNECT_NOTE, jitter=random.random())
        await apply_event(session, mailbox, Event.OPS_DISCONNECT, occurrence, deps.events)
