"""The access-token route's common case in one database round trip: key, row and audit row in one statement.

A host app asks for a token far more often than one needs refreshing, and the ORM's transaction took six
round trips (pre-ping, BEGIN, key, row, audit, COMMIT) and about 3 ms of Python. This statement checks the
key (live, by hash: a revoked key is refused at once, nothing is cached), notes its use at most once a minute,
reads the mailbox and, only when the stored token lasts long enough and the mailbox is not disconnected,
appends the audit row: one prepared asyncpg statement, atomic on its own (no BEGIN, no COMMIT). Anything else
(a bad key, id or body, an unknown or disconnected mailbox, a token that needs a cycle) returns None, and
the route's general path answers it exactly as before. The connections are the Runtime's statement pool
(statemachine/store/statements.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request

from statemachine.core.secrets import TokenCipher
from statemachine.core.states import State
from statemachine.services.access_tokens import open_access_token
from statemachine.store.statements import StatementPool
from web.signing import hash_secret
from web.v1.keys import KEY_PREFIX, LAST_USED_EVERY
from web.v1.requests import MAX_BODY_BYTES

LAST_USED_SECONDS = int(LAST_USED_EVERY.total_seconds())

# $1 key hash, $2 mailbox id, $3 now, $4 the expiry the token must reach (now + min_valid_seconds)
ISSUE_STORED = f"""
WITH key AS (
    SELECT id, name, last_used_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL
), touched AS (
    UPDATE api_keys SET last_used_at = $3::timestamptz FROM key
    WHERE api_keys.id = key.id
      AND (key.last_used_at IS NULL OR key.last_used_at <= $3::timestamptz - interval '{LAST_USED_SECONDS} s')
), mailbox AS (
    SELECT access_token_ciphertext, access_token_expires_at, granted_scope FROM mailboxes
    WHERE id = $2 AND state <> '{State.DISCONNECTED.value}' AND access_token_ciphertext IS NOT NULL
      AND access_token_expires_at >= $4
), audit AS (
    INSERT INTO access_token_audit (key_name, mailbox_id, cycle_ran)
    SELECT key.name, $2, false FROM key, mailbox
    RETURNING id
)
SELECT mailbox.access_token_ciphertext, mailbox.access_token_expires_at, (SELECT id FROM audit), mailbox.granted_scope
FROM key, mailbox
"""
UNDO_AUDIT = "DELETE FROM access_token_audit WHERE id = $1"


def _min_valid_seconds(raw: bytes, default: int, high: int) -> int | None:
    """The body's min_valid_seconds when the body is well-formed, else None (the general path says why)."""
    if len(raw) > MAX_BODY_BYTES:
        return None
    try:
        body: Any = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        return None
    value = body.get("min_valid_seconds", default) if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        return None
    return value


async def issue_stored(
    request: Request, pool: StatementPool, cipher: TokenCipher, *, default: int, high: int
) -> dict[str, Any] | None:
    """The response body when the stored token lasts, with its audit row written; None for any other case."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key, raw_id = key.strip(), request.path_params["mailbox_id"]
    if scheme.lower() != "bearer" or not key.startswith(KEY_PREFIX) or not raw_id.isdigit() or len(raw_id) > 18:
        return None
    min_valid = _min_valid_seconds(await request.body(), default, high)
    if min_valid is None:
        return None
    mailbox_id, now = int(raw_id), datetime.now(UTC)
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            ISSUE_STORED, hash_secret(key), mailbox_id, now, now + timedelta(seconds=min_valid)
        )
        if row is None:
            return None
        token = open_access_token(cipher, mailbox_id, row[0])
        if token is None:  # not handed out, so not audited: the general path refreshes and answers
            await connection.execute(UNDO_AUDIT, row[2])
            return None
    return {"access_token": token, "expires_at": row[1].isoformat(), "scope": row[3]}
