"""The access-token route's one-statement common case (web/v1/fast_token.py), checked on the statement itself.

It must answer only when the key is live and the stored token lasts, writing the audit row in the same
statement, and answer nothing (no row, no audit row) otherwise, so the general path decides those cases.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.web.v1.conftest import KEY_NAME
from tests.web.v1.support import granted_mailbox
from tests.web.v1.test_access_token import audit
from web.pages import WebContext
from web.signing import hash_secret
from web.v1.fast_token import ISSUE_STORED
from web.v1.keys import revoke_key


async def test_the_statement_answers_a_live_key_and_a_lasting_token_only(
    web: WebContext, api_key: str, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(web, google, token_seconds=3000)
    now = datetime.now(UTC)

    async def ask(key: str, mailbox: int, seconds: int) -> object:
        return await web.runtime.statements.fetchrow(
            ISSUE_STORED, hash_secret(key), mailbox, now, now + timedelta(seconds=seconds)
        )

    assert await ask(api_key, mailbox_id, 600) is not None
    assert await audit(web) == [(KEY_NAME, mailbox_id, False)]
    assert await ask(api_key, mailbox_id, 3600) is None  # does not last: the general path runs a cycle
    assert await ask(api_key, mailbox_id + 1, 600) is None  # unknown mailbox: the general path says 404
    assert await ask(api_key + "x", mailbox_id, 600) is None  # wrong key
    async with web.runtime.sessionmaker() as session, session.begin():
        await revoke_key(session, KEY_NAME, now)
    assert await ask(api_key, mailbox_id, 600) is None  # revoked a moment ago: nothing is cached
    assert await audit(web) == [(KEY_NAME, mailbox_id, False)]
