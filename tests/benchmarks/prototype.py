"""The issue's minimal prototype, measured in the same run as the workers it is the baseline of.

Issue 12 set the pipeline's bar as "cheaper than a minimal pipeline with no framework": asyncpg (a claim
statement; then one transaction with the row update and the history insert), aiohttp for the token POST,
Fernet decrypt and encrypt, 20 in flight, against the same local endpoint. Its figures in the issue come
from another day on another box; this module runs it here, in a process of its own as a worker is, so the
worker's figures can be read beside it. It keeps none of the worker's other guarantees (no state machine,
no failure handling, no incident guard, no job queue): it is a floor, not an alternative.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from statemachine.core.secrets import Secret, TokenCipher
from tests.benchmarks import floors

IN_FLIGHT = floors.IN_FLIGHT

# the next due mailbox nobody holds, leased to this lane for the length of its refresh
CLAIM = """
UPDATE mailboxes SET lease_owner = $1, lease_until = now() + interval '2 minutes'
WHERE id = (
    SELECT id FROM mailboxes
    WHERE next_refresh_at <= now() AND removed_at IS NULL AND (lease_until IS NULL OR lease_until <= now())
    ORDER BY next_refresh_at LIMIT 1 FOR UPDATE SKIP LOCKED
)
RETURNING id, refresh_token_ciphertext
"""

REFRESHED = """
UPDATE mailboxes SET access_token_ciphertext = $2, access_token_expires_at = $3::timestamptz, last_refreshed_at = now(),
    next_refresh_at = $3::timestamptz - interval '5 minutes', updated_at = now(), lease_owner = NULL, lease_until = NULL
WHERE id = $1 AND lease_owner = $4
"""

HISTORY = """
INSERT INTO mailbox_state_transitions (mailbox_id, event, from_state, to_state, reason, actor)
VALUES ($1, 'refresh_succeeded', 'healthy', 'healthy', 'access token refreshed', 'prototype')
"""


@dataclass(frozen=True)
class PrototypeRun:
    cpu_per_refresh: float  # seconds of the prototype process's CPU
    box_cpu_per_refresh: float  # seconds of the whole machine's busy CPU over the same span
    per_second: float
    refreshed: int


async def refresh_due(database_url: str, token_url: str, client: dict[str, str], keys: str) -> PrototypeRun:
    """Refresh every due mailbox, IN_FLIGHT at a time, until none is left."""
    cipher = TokenCipher([Secret(key) for key in keys.split(",")])
    form = {"grant_type": "refresh_token", "client_id": client["GOOGLE_CLIENT_ID"],
            "client_secret": client["GOOGLE_CLIENT_SECRET"]}  # fmt: skip
    pool = await asyncpg.create_pool(database_url.replace("+asyncpg", ""), min_size=IN_FLIGHT, max_size=IN_FLIGHT)
    refreshed = 0

    async def lane(session: aiohttp.ClientSession) -> None:
        nonlocal refreshed
        owner = uuid.uuid4()
        while (row := await pool.fetchrow(CLAIM, owner)) is not None:
            mailbox_id, ciphertext = row
            refresh_token = cipher.decrypt(ciphertext, mailbox_id=mailbox_id, role="refresh")
            async with session.post(token_url, data={**form, "refresh_token": refresh_token}) as response:
                answer = await response.json()
            sealed = cipher.encrypt(answer["access_token"], mailbox_id=mailbox_id, role="access")
            expires_at = datetime.now(UTC) + timedelta(seconds=answer["expires_in"])
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(REFRESHED, mailbox_id, sealed, expires_at, owner)
                await conn.execute(HISTORY, mailbox_id)
            refreshed += 1

    try:
        async with aiohttp.ClientSession() as session:
            started, cpu, box = time.monotonic(), time.process_time(), floors.box_cpu_seconds()
            await asyncio.gather(*(lane(session) for _ in range(IN_FLIGHT)))
            wall, cpu, box = time.monotonic() - started, time.process_time() - cpu, floors.box_cpu_seconds() - box
    finally:
        await pool.close()
    if not refreshed:
        raise RuntimeError("the prototype found no due mailbox")
    return PrototypeRun(cpu / refreshed, box / refreshed, refreshed / wall, refreshed)


async def run_apart(database_url: str, token_url: str, client: dict[str, str], keys: str) -> PrototypeRun:
    """`refresh_due` in a process of its own, as a worker runs: the request on stdin, the figures on stdout."""
    asked = {"database_url": database_url, "token_url": token_url, "client": client, "keys": keys}
    out = await floors.in_own_process("tests.benchmarks.prototype", asked)
    return PrototypeRun(**json.loads(out))


if __name__ == "__main__":
    request = json.load(sys.stdin)
    print(json.dumps(asdict(asyncio.run(refresh_due(**request)))))
