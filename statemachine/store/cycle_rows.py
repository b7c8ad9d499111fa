"""A refresh cycle's own statements: the lease, a rotated token, a routine refresh's outcome.

They run on the Runtime's plain asyncpg connections (store/statements.py), prepared once per connection
and each atomic on its own: no BEGIN or COMMIT round trip, no ORM bookkeeping. That is most of a cycle's
database CPU (README, Measurements). Every other outcome (a failure, a state change, an email) goes
through the ORM transaction of `apply_event` (docs/transactions.md).

The lease returns the lifecycle columns as they were leased. A routine refresh (a healthy mailbox's
success: no history row, no email, no webhook) is then written by one compare-and-set statement: it
updates the row only if the revision and every lifecycle column the machine read are unchanged, and
appends the incident guard's outcome row in the same statement. When anything changed, it writes
nothing and the cycle falls back to the locking transaction, which decides on the row as it is now.

A worker's cycles take their scan's claims over through `Takeovers`: the takeovers asked for in one turn of
the event loop go as one statement (a batch job starts its cycles together, and cycles end together), each
still with its own owner and lease time, each taken over only from its own claim.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from statemachine.core.access_tokens import SealedAccessToken
from statemachine.core.machine import Lifecycle
from statemachine.store.repository import LIFECYCLE_COLUMNS, UnknownMailboxError
from statemachine.store.statements import StatementPool

if TYPE_CHECKING:
    from asyncpg import Record

LIFECYCLE = tuple(LIFECYCLE_COLUMNS.values())


# what a lease reads: the Lease's fields after its owner, in order
LEASED = f"""revision, provider, refresh_token_ciphertext, grant_generation, provider_subject IS NOT NULL,
    {", ".join(f"mailboxes.{column}" for column in LIFECYCLE)}"""

# $1 id, $2 new owner, $3 lease until, $4 now, $5 revision (or NULL)
LEASE = f"""
UPDATE mailboxes SET lease_owner = $2, lease_until = $3
WHERE id = $1 AND removed_at IS NULL AND (lease_until IS NULL OR lease_until <= $4)
  AND ($5::integer IS NULL OR revision = $5::integer)
RETURNING lease_owner, {LEASED}
"""

# $1 ids, $2 the claims to take over, $3 the new owners, $4 their lease times: one element per takeover. A claim is
# taken over whether its lease is live or not; of two takeovers of one claim (one id twice), one wins.
TAKEOVERS = f"""
UPDATE mailboxes SET lease_owner = asked.owner, lease_until = asked.until
FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::timestamptz[]) AS asked(id, claim, owner, until)
WHERE mailboxes.id = asked.id AND mailboxes.removed_at IS NULL AND mailboxes.lease_owner = asked.claim
RETURNING mailboxes.lease_owner, {LEASED}
"""

EXISTS = "SELECT 1 FROM mailboxes WHERE id = $1"

# $1 id, $2 lease owner, $3 the grant generation refreshed, $4 the new ciphertext
ROTATED = """
UPDATE mailboxes SET refresh_token_ciphertext = $4
WHERE id = $1 AND lease_owner = $2 AND grant_generation = $3
RETURNING id
"""

# $1 id, $2 revision leased, $3 now, $4 lease owner, $5/$6 access token and expiry, $7 the id_token's subject,
# $8 record the incident guard's outcome row, $9 is_active, $10 the granted scope (or NULL: keep it); then the
# new lifecycle values, then the leased ones
_NEW = 11
_LEASED = _NEW + len(LIFECYCLE)
ROUTINE = f"""
WITH refreshed AS (
    UPDATE mailboxes SET {", ".join(f"{column} = ${_NEW + i}" for i, column in enumerate(LIFECYCLE))},
        is_active = $9, revision = revision + 1, updated_at = $3, last_refreshed_at = $3,
        access_token_ciphertext = $5, access_token_expires_at = $6, provider_subject = COALESCE(provider_subject, $7),
        granted_scope = COALESCE($10, granted_scope),
        lease_owner = NULLIF(lease_owner, $4), lease_until = CASE WHEN lease_owner = $4 THEN NULL ELSE lease_until END
    WHERE id = $1 AND revision = $2
      AND {" AND ".join(f"{c} IS NOT DISTINCT FROM ${_LEASED + i}" for i, c in enumerate(LIFECYCLE))}
    RETURNING provider
), outcome AS (
    INSERT INTO refresh_outcomes (provider, mailbox_id, outcome, at)
    SELECT provider, $1, 'success', $3 FROM refreshed WHERE $8::boolean
)
SELECT count(*) FROM refreshed
"""


@dataclass(frozen=True)
class Lease:
    """A cycle's claim on a mailbox: only the owner may apply an outcome, until `until`."""

    mailbox_id: int
    owner: uuid.UUID
    revision: int
    provider: str
    refresh_token_ciphertext: bytes
    grant_generation: int
    account_known: bool  # the row names its account (provider_subject): a refresh answer's id_token is not needed
    leased: tuple[Any, ...]  # the LIFECYCLE columns as the lease read them

    def lifecycle(self) -> Lifecycle:
        """A fresh machine model of the row as leased (the machine changes it in place)."""
        return Lifecycle(**dict(zip(LIFECYCLE_COLUMNS, self.leased, strict=True)))


async def take_lease(
    pool: StatementPool, mailbox_id: int, owner: uuid.UUID, now: datetime, until: datetime,
    *, revision: int | None = None,
) -> Lease | None:  # fmt: skip
    """Lease the mailbox to `owner` unless another live lease holds it (then None).

    With `revision`, only while the row is still at that revision: a caller that decided to refresh
    from what it read gets None when another cycle changed the row since (the API's single flight).
    A removed mailbox has no tokens left to refresh: None. An id that does not exist: UnknownMailboxError.
    """
    return await _lease_of(pool, mailbox_id, await pool.fetchrow(LEASE, mailbox_id, owner, until, now, revision))


async def _lease_of(pool: StatementPool, mailbox_id: int, row: Record | None) -> Lease | None:
    if row is None:
        if await pool.fetchval(EXISTS, mailbox_id) is None:
            raise UnknownMailboxError(mailbox_id)
        return None
    return Lease(mailbox_id, row[0], row[1], row[2], row[3], row[4], row[5], tuple(row[6:]))


@dataclass
class _Asked:
    mailbox_id: int
    claim: uuid.UUID
    owner: uuid.UUID
    until: datetime
    row: asyncio.Future[Record | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Takeovers:
    """The process's takeovers of scan claims, sent together per event-loop turn (one per process: `Runtime`).

    Why: each takeover was a statement of its own, a round trip whose system calls and message handling cost
    as much CPU as the cycle's Python around it. The cycles of a worker's batch job start together and many
    end together; in `make bench`'s worker run, 3,000 takeovers went as about 1,100 statements.
    The first takeover of a turn schedules the statement for the end of that turn (`call_soon`), so none waits
    for more than the cycles that asked in the same turn. The statement runs in a task of its own: a cycle
    cancelled while waiting (its timeout, a shutdown) does not cancel the others' takeovers; its own may still
    take effect, like a cancelled single statement's, and its lease then runs out unused.
    """

    def __init__(self, pool: StatementPool) -> None:
        self._pool = pool
        self._asked: list[_Asked] = []
        self._sending: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones

    async def take_over(self, mailbox_id: int, claim: uuid.UUID, owner: uuid.UUID, until: datetime) -> Lease | None:
        """Lease the mailbox to `owner` until `until`, only from the scan's `claim` (live or not): a job whose
        claim is finished, or was taken by a copy of the same job, gets None and does nothing. A removed mailbox:
        None. An id that does not exist: UnknownMailboxError."""
        asked = _Asked(mailbox_id, claim, owner, until)
        if not self._asked:
            asyncio.get_running_loop().call_soon(self._send)
        self._asked.append(asked)
        return await _lease_of(self._pool, mailbox_id, await asked.row)

    def _send(self) -> None:
        # in id order: two statements taking over the same claims (two copies of a batch, on two workers) then lock
        # the rows in the same order, and one waits for the other instead of both deadlocking
        in_order = sorted(self._asked, key=lambda asked: asked.mailbox_id)
        task = asyncio.get_running_loop().create_task(self._run(in_order))
        self._asked = []
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _run(self, asked: list[_Asked]) -> None:
        columns = ([a.mailbox_id for a in asked], [a.claim for a in asked], [a.owner for a in asked],
                   [a.until for a in asked])  # fmt: skip
        try:
            rows = await self._pool.fetch(TAKEOVERS, *columns)
        except Exception as err:  # each cycle that asked raises it, as it would have raised its own statement's
            for one in asked:
                if not one.row.done():
                    one.row.set_exception(err)
            return
        except asyncio.CancelledError:  # the loop is closing
            for one in asked:
                one.row.cancel()
            raise
        by_owner = {row[0]: row for row in rows}
        for one in asked:
            if not one.row.done():
                one.row.set_result(by_owner.get(one.owner))


async def store_rotated_refresh_token(pool: StatementPool, lease: Lease, ciphertext: bytes) -> bool:
    """Keep a newly issued refresh token at once (RFC 9700 §4.14.2), while our lease holds and the grant we
    refreshed is still the mailbox's: a reconnect's newer grant always wins over an old grant's rotated token."""
    return await pool.fetchval(ROTATED, lease.mailbox_id, lease.owner, lease.grant_generation, ciphertext) is not None


@dataclass(frozen=True)
class RoutineRefresh:
    """What a routine refresh writes beyond the lifecycle: the sealed access token, and the account and the
    scope when the answer named them."""

    sealed: SealedAccessToken
    subject: str | None
    scope: str | None
    at: datetime


async def apply_routine_refresh(
    pool: StatementPool, lease: Lease, lifecycle: Lifecycle, refresh: RoutineRefresh, *, record_outcome: bool
) -> bool:
    """Write the refreshed row, release the lease and record the outcome, only if the row is as leased."""
    new = tuple(getattr(lifecycle, field) for field in LIFECYCLE_COLUMNS)
    written = await pool.fetchval(
        ROUTINE, lease.mailbox_id, lease.revision, refresh.at, lease.owner, *refresh.sealed, refresh.subject,
        record_outcome, lifecycle.is_active, refresh.scope, *new, *lease.leased,
    )  # fmt: skip
    return bool(written)
