"""The promises checked at the end of a chaos run, each as one row of the table it prints.

Why each one: a due refresh not done is a token about to die; a mailbox with a valid grant that is not
healthy is a false alarm to its owner; a grant revoked for reuse is a lost mailbox (allowed only inside
the crash window, refresh request sent -> rotated token committed); a duplicated history row,
outbox row or email is noise, and an email is a duplicate only if it carries the same Message-ID.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import text

from devkit.chaos.smtp import RecordingSmtp
from devkit.sandbox import SandboxState
from statemachine.store.db import Sessionmaker

OVERDUE_TOLERANCE_SECONDS = 15.0  # a scan interval plus a loaded machine's queueing
CRASH_WINDOW_SECONDS = 5.0  # a crash this close to the provider's rotation may have lost the new token


@dataclass(frozen=True)
class Promise:
    promise: str
    found: str
    kept: bool


@dataclass(frozen=True)
class Facts:
    """What the run did, for the checks: the provider, the mail server, the crashes and the grants it revoked."""

    sandbox: SandboxState
    smtp: RecordingSmtp
    crashes: tuple[tuple[float, float], ...]  # time.time() spans of each SIGKILL and PostgreSQL restart
    revoked_subs: frozenset[str]
    sub_of_address: dict[str, str]


async def _scalar(sessionmaker: Sessionmaker, sql: str) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(text(sql))).scalar_one())


def explained(retired_at: float, crashes: Iterable[tuple[float, float]]) -> bool:
    """A kill or restart within the window around the rotation: before it, the worker died with its request in
    flight and the provider answered a dead connection; after it, the response was read but not yet committed."""
    return any(start <= retired_at + CRASH_WINDOW_SECONDS and retired_at - CRASH_WINDOW_SECONDS <= end
               for start, end in crashes)  # fmt: skip


async def check(sessionmaker: Sessionmaker, facts: Facts) -> list[Promise]:
    overdue = await _scalar(
        sessionmaker,
        "select count(*) from mailboxes where is_active and next_refresh_at < now() - "
        f"make_interval(secs => {OVERDUE_TOLERANCE_SECONDS})",
    )
    async with sessionmaker() as session:
        rows = (await session.execute(text("select address, state from mailboxes"))).tuples().all()
        states: dict[str, str] = {str(a): str(s) for a, s in rows}
        outbox = (await session.execute(text("select status, message_id from notifications"))).tuples().all()
    live_subs = {grant.sub for grant in list(facts.sandbox.grants.values())}
    valid = [address for address, sub in facts.sub_of_address.items() if sub in live_subs]
    unhealthy = [address for address in valid if states.get(address) != "healthy"]
    dead = [address for address, sub in facts.sub_of_address.items() if sub not in live_subs]
    still_active = [address for address in dead if states.get(address) != "disconnected"]
    reused = dict(facts.sandbox.revoked_by_reuse)
    unexplained = [sub for sub, at in reused.items() if not explained(at, facts.crashes)]
    duplicated_history = await _scalar(
        sessionmaker,
        "select count(*) from (select 1 from mailbox_state_transitions "
        "group by mailbox_id, event, from_state, to_state, at having count(*) > 1) d",
    )
    duplicated_outbox = await _scalar(
        sessionmaker, "select count(*) from (select 1 from notifications group by dedupe_key having count(*) > 1) d"
    )
    sent = {message_id for status, message_id in outbox if status == "sent"}
    unsent = Counter(status for status, _ in outbox if status != "sent")
    received = facts.smtp.received
    strangers = [message_id for message_id in received if message_id not in {m for _, m in outbox}]
    resent = sum(received.values()) - len(received)
    return [
        Promise("every due refresh done (none overdue)", f"{overdue} overdue", overdue == 0),
        Promise(
            "every mailbox whose grant is valid is healthy",
            f"{len(valid) - len(unhealthy)} of {len(valid)}",
            not unhealthy,
        ),
        Promise(
            "every mailbox whose grant is gone is disconnected",
            f"{len(dead) - len(still_active)} of {len(dead)}",
            not still_active,
        ),
        Promise("grants revoked for token reuse outside the crash window", f"{len(unexplained)}", not unexplained),
        Promise(
            "grants revoked for token reuse inside the crash window (a kill or restart within "
            f"{CRASH_WINDOW_SECONDS:g} s of the rotation: request sent -> rotated token committed)",
            f"{len(reused) - len(unexplained)}",
            True,
        ),
        Promise("duplicated history rows / state changes", f"{duplicated_history}", duplicated_history == 0),
        Promise("duplicated outbox rows", f"{duplicated_outbox}", duplicated_outbox == 0),
        Promise(
            "every email delivered (outbox rows sent)",
            f"{len(sent)} of {len(outbox)}" + "".join(f", {n} {status}" for status, n in sorted(unsent.items())),
            not unsent,
        ),
        Promise(
            "each sent email received under its own Message-ID",
            f"{len(set(received) & sent)} of {len(sent)}",
            sent <= set(received),
        ),
        Promise("received emails with a Message-ID no outbox row has", f"{len(strangers)}", not strangers),
        Promise("emails received twice (same Message-ID: a resend after a drop or a kill)", f"{resent}", True),
    ]
