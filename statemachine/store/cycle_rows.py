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
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from statemachine.core.access_tokens import SealedAccessToken
from statemachine.core.machine import Lifecycle
from statemachine.store.repository import LIFECYCLE_COLUMNS, UnknownMailboxError
from statemachine.store.statements import StatementPool

LIFECYCLE = tuple(LIFECYCLE_COLUMNS.values())


# $1 id, $2 new owner, $3 lease until, $4 now, $5 the scan's claim to take over (or NULL), $6 revision (or NULL)
LEASE = f"""
UPDATE mailboxes SET lease_owner = $2, lease_until = $3
WHERE id = $1 AND removed_at IS NULL
  AND CASE WHEN $5::uuid IS NULL THEN lease_until IS NULL OR lease_until <= $4 ELSE lease_owner = $5::uuid END
  AND ($6::integer IS NULL OR revision = $6::integer)
RETURNING revision, provider, refresh_token_ciphertext, grant_generation, provider_subject IS NOT NULL,
    {", ".join(LIFECYCLE)}
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
    *, takeover_from: uuid.UUID | None = None, revision: int | None = None,
) -> Lease | None:  # fmt: skip
    """Lease the mailbox to `owner` unless another live lease holds it (then None).

    With `takeover_from` (a scan's claim), take it over only from that claim, live or not: a job
    whose claim is finished, or was taken by a copy of the same job, gets None and does nothing.
    With `revision`, only while the row is still at that revision: a caller that decided to refresh
    from what it read gets None when another cycle changed the row since (the API's single flight).
    A removed mailbox has no tokens left to refresh: None. An id that does not exist: UnknownMailboxError.
    """
    row = await pool.fetchrow(LEASE, mailbox_id, owner, until, now, takeover_from, revision)
    if row is None:
        if await pool.fetchval(EXISTS, mailbox_id) is None:
            raise UnknownMailboxError(mailbox_id)
        return None
    return Lease(mailbox_id, owner, row[0], row[1], row[2], row[3], row[4], tuple(row[5:]))


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
