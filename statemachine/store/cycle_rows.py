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

A worker's takeovers of its scan's claims, and every routine refresh's write, go through `SharedStatements`:
those asked for in one turn of the event loop go as one statement of each kind (store/per_turn.py), each still
with its own owner, lease time and claim, each routine write still compared with its own lease.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.dialects import postgresql

from statemachine.core.access_tokens import SealedAccessToken
from statemachine.core.machine import Lifecycle
from statemachine.store.models import Mailbox
from statemachine.store.per_turn import PerTurn
from statemachine.store.repository import LIFECYCLE_COLUMNS, UnknownMailboxError
from statemachine.store.statements import StatementPool

if TYPE_CHECKING:
    from asyncpg import Record

LIFECYCLE = tuple(LIFECYCLE_COLUMNS.values())

_POSTGRESQL = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped


def _sql_type(column: str) -> str:
    """The column's PostgreSQL type, read off the model, for an array of its values."""
    return str(Mailbox.__table__.c[column].type.compile(dialect=_POSTGRESQL))


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

# One element per routine refresh in each array: id, revision leased, now, lease owner, access token and expiry, the
# id_token's subject (or NULL), record the incident guard's outcome row, is_active, the granted scope (or NULL: keep
# it); then the new lifecycle values, then the leased ones. Written only where the row is still as leased.
_ARRAYS = (("id", "bigint"), ("revision", "integer"), ("at", "timestamptz"), ("owner", "uuid"), ("access", "bytea"),
           ("expires", "timestamptz"), ("subject", "text"), ("record", "boolean"), ("active", "boolean"),
           ("scope", "text"), *((f"new_{c}", _sql_type(c)) for c in LIFECYCLE),
           *((f"leased_{c}", _sql_type(c)) for c in LIFECYCLE))  # fmt: skip
_UNNEST = ", ".join(f"${i}::{sql_type}[]" for i, (_, sql_type) in enumerate(_ARRAYS, start=1))
_ASKED = ", ".join(name for name, _ in _ARRAYS)
ROUTINE = f"""
WITH asked AS (
    SELECT * FROM unnest({_UNNEST}) AS asked({_ASKED})
), refreshed AS (
    UPDATE mailboxes SET {", ".join(f"{column} = asked.new_{column}" for column in LIFECYCLE)},
        is_active = asked.active, revision = mailboxes.revision + 1,
        updated_at = asked.at, last_refreshed_at = asked.at,
        access_token_ciphertext = asked.access, access_token_expires_at = asked.expires,
        provider_subject = COALESCE(mailboxes.provider_subject, asked.subject),
        granted_scope = COALESCE(asked.scope, mailboxes.granted_scope),
        lease_owner = NULLIF(mailboxes.lease_owner, asked.owner),
        lease_until = CASE WHEN mailboxes.lease_owner = asked.owner THEN NULL ELSE mailboxes.lease_until END
    FROM asked
    WHERE mailboxes.id = asked.id AND mailboxes.revision = asked.revision
      AND {" AND ".join(f"mailboxes.{c} IS NOT DISTINCT FROM asked.leased_{c}" for c in LIFECYCLE)}
    RETURNING asked.owner, mailboxes.id, mailboxes.provider, asked.at, asked.record
), outcome AS (
    INSERT INTO refresh_outcomes (provider, mailbox_id, outcome, at)
    SELECT provider, id, 'success', at FROM refreshed WHERE record
)
SELECT owner FROM refreshed
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


@dataclass(frozen=True)
class _Takeover:
    mailbox_id: int
    claim: uuid.UUID
    owner: uuid.UUID
    until: datetime


@dataclass(frozen=True)
class _RoutineWrite:
    lease: Lease
    lifecycle: Lifecycle
    refresh: RoutineRefresh
    record_outcome: bool


class SharedStatements:
    """A process's takeovers of scan claims and its routine refreshes' writes, each kind sent as one statement per
    event-loop turn (store/per_turn.py); one per process (`Runtime`).

    The statements go in id order: two of them touching the same rows (two workers taking over the same claims,
    two copies of a batch) then lock the rows in the same order, and one waits for the other instead of both
    deadlocking. In `make bench`'s worker run, 3,000 takeovers went as about 1,100 statements.
    """

    def __init__(self, pool: StatementPool) -> None:
        self._pool = pool
        self._takeovers = PerTurn(self._take_over_all, order=lambda asked: asked.mailbox_id)
        self._routine = PerTurn(self._write_all, order=lambda asked: asked.lease.mailbox_id)

    async def take_over(self, mailbox_id: int, claim: uuid.UUID, owner: uuid.UUID, until: datetime) -> Lease | None:
        """Lease the mailbox to `owner` until `until`, only from the scan's `claim` (live or not): a job whose
        claim is finished, or was taken by a copy of the same job, gets None and does nothing. A removed mailbox:
        None. An id that does not exist: UnknownMailboxError."""
        row = await self._takeovers.ask(_Takeover(mailbox_id, claim, owner, until))
        return await _lease_of(self._pool, mailbox_id, row)

    async def write_routine(
        self, lease: Lease, lifecycle: Lifecycle, refresh: RoutineRefresh, *, record_outcome: bool
    ) -> bool:
        """Write the refreshed row, release the lease and record the outcome, only if the row is as leased."""
        return await self._routine.ask(_RoutineWrite(lease, lifecycle, refresh, record_outcome))

    async def _take_over_all(self, asked: list[_Takeover]) -> list[Record | None]:
        columns = ([a.mailbox_id for a in asked], [a.claim for a in asked], [a.owner for a in asked],
                   [a.until for a in asked])  # fmt: skip
        by_owner = {row[0]: row for row in await self._pool.fetch(TAKEOVERS, *columns)}
        return [by_owner.get(a.owner) for a in asked]

    async def _write_all(self, asked: list[_RoutineWrite]) -> list[bool]:
        rows = [
            (a.lease.mailbox_id, a.lease.revision, a.refresh.at, a.lease.owner, *a.refresh.sealed, a.refresh.subject,
             a.record_outcome, a.lifecycle.is_active, a.refresh.scope,
             *(getattr(a.lifecycle, field) for field in LIFECYCLE_COLUMNS), *a.lease.leased)
            for a in asked
        ]  # fmt: skip
        columns = [list(column) for column in zip(*rows, strict=True)]
        written = {row[0] for row in await self._pool.fetch(ROUTINE, *columns)}
        return [a.lease.owner in written for a in asked]


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
