"""POST /v1/mailboxes/{id}/access-token against the sandbox Google over real HTTP.

A valid token costs no token request; an expiring one costs exactly one however many callers ask at
once, in this process and in a `tokenwarden serve` subprocess; failures answer 409 or 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, update

from devkit.sandbox.state import DEFAULT_SCOPE
from statemachine.core.secrets import Secret, TokenCipher
from statemachine.store import queries
from statemachine.store.models import Mailbox
from tests.web.support import now, row, start_serving, stop_serving
from tests.web.v1.conftest import KEY_NAME, Api
from tests.web.v1.support import granted_mailbox, token_requests
from web.pages import WebContext
from web.tables import AccessTokenAudit

CALLERS = 50


async def audit(web: WebContext) -> list[tuple[str, int, bool]]:
    async with web.runtime.sessionmaker() as session:
        rows = await session.execute(select(AccessTokenAudit.key_name, AccessTokenAudit.mailbox_id,
                                            AccessTokenAudit.cycle_ran).order_by(AccessTokenAudit.id))  # fmt: skip
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_a_valid_token_is_returned_without_a_token_request(
    web: WebContext, api: Api, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(web, google, token_seconds=3000)
    response = await api().post(f"/v1/mailboxes/{mailbox_id}/access-token", json={"min_valid_seconds": 600})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["access_token"] == "ya29.stored-SECRET"
    assert datetime.fromisoformat(body["expires_at"]) > now() + timedelta(seconds=2900)
    assert await token_requests(google) == 0
    assert await audit(web) == [(KEY_NAME, mailbox_id, False)]


async def test_an_expiring_token_costs_one_token_request_for_50_callers_in_two_processes(
    web: WebContext, web_env: dict[str, str], api: Api, api_key: str, google: httpx.AsyncClient, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    mailbox_id = await granted_mailbox(web, google, rotate=True, token_seconds=60)
    old_refresh = (await row(web, mailbox_id)).refresh_token_ciphertext
    # the token endpoint answers after half a second, so the callers really overlap
    fault = {"mode": "timeout", "refresh_token": "1//refresh-SECRET-ana@gmail.test", "seconds": 0.5, "count": 1}
    (await google.post("/_sandbox/faults", json=fault)).raise_for_status()
    url, process = start_serving(web_env, tmp_path / "serve.log")
    try:
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {api_key}"}, timeout=30) as other:
            clients = [api(), other]
            path = f"/v1/mailboxes/{mailbox_id}/access-token"
            responses = await asyncio.gather(*(clients[n % 2].post(path) for n in range(CALLERS)))
    finally:
        stop_serving(process)
    assert [r.status_code for r in responses] == [200] * CALLERS, [r.text for r in responses if r.status_code != 200]
    tokens = {r.json()["access_token"] for r in responses}
    assert len(tokens) == 1
    assert tokens != {"ya29.stored-SECRET"}
    assert await token_requests(google) == 1
    mailbox = await row(web, mailbox_id)
    assert mailbox.refresh_token_ciphertext != old_refresh  # the rotated refresh token was kept
    audit_rows = await audit(web)
    assert len(audit_rows) == CALLERS
    assert sum(cycle_ran for _, _, cycle_ran in audit_rows) == 1
    secret = tokens.pop()
    assert secret not in caplog.text
    assert secret not in (tmp_path / "serve.log").read_text()
    async with web.runtime.sessionmaker() as session:
        assert secret not in str(await queries.history(session, mailbox_id))


async def test_a_disconnected_mailbox_gets_409_with_its_reason_and_reconnect_link(
    web: WebContext, api: Api, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(
        web, google, token_seconds=3000, state="disconnected", token_refresh_error="invalid_grant: Access was revoked.",
        failure_kind="permanent",
    )  # fmt: skip
    response = await api().post(f"/v1/mailboxes/{mailbox_id}/access-token")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "mailbox_disconnected"
    assert error["reason"] == "Access was revoked."
    assert error["reconnect_url"].endswith(f"/mailboxes/{mailbox_id}/reconnect")
    assert "ya29" not in response.text
    assert await token_requests(google) == 0


async def test_a_transient_failure_with_an_expired_token_is_503_with_retry_after_and_not_retried_early(
    web: WebContext, api: Api, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(web, google, token_seconds=-10)
    fault = {"mode": "http_5xx", "refresh_token": "1//refresh-SECRET-ana@gmail.test"}
    (await google.post("/_sandbox/faults", json=fault)).raise_for_status()
    client = api()
    response = await client.post(f"/v1/mailboxes/{mailbox_id}/access-token")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "refresh_failed"
    assert int(response.headers["retry-after"]) >= 1
    requests = await token_requests(google)
    assert requests >= 1  # the cycle's own retries
    assert (await row(web, mailbox_id)).state == "retrying"
    again = await client.post(f"/v1/mailboxes/{mailbox_id}/access-token")
    assert again.status_code == 503
    assert await token_requests(google) == requests  # a failing mailbox waits for its next_refresh_at


@pytest.mark.parametrize(
    "state",
    [{}, {"state": "retrying", "failure_kind": "transient", "token_refresh_attempt_count": 1}],
    ids=["routine-refresh", "recovery"],  # the one-statement outcome, and the transaction's
)
async def test_the_answer_names_the_scope_the_provider_last_named_on_both_paths(
    web: WebContext, api: Api, google: httpx.AsyncClient, state: dict[str, object]
) -> None:
    mailbox_id = await granted_mailbox(web, google, token_seconds=-10, **state)
    path = f"/v1/mailboxes/{mailbox_id}/access-token"
    refreshed = await api().post(path)  # a cycle: the sandbox's answer names the grant's scope
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["scope"] == DEFAULT_SCOPE
    stored = await api().post(path)  # the stored token, in one statement
    assert stored.json() == refreshed.json()
    assert await token_requests(google) == 1
    assert (await row(web, mailbox_id)).granted_scope == DEFAULT_SCOPE


async def seal_under_a_retired_key(web: WebContext, mailbox_id: int, *, refresh_token: bool) -> None:
    """A stored access token (and the refresh token, if asked) that no configured key opens."""
    retired = TokenCipher([Secret(Fernet.generate_key().decode())])
    values = {"access_token_ciphertext": retired.encrypt("ya29.retired-SECRET", mailbox_id=mailbox_id, role="access")}
    if refresh_token:
        values["refresh_token_ciphertext"] = retired.encrypt("1//retired", mailbox_id=mailbox_id, role="refresh")
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(update(Mailbox).where(Mailbox.id == mailbox_id).values(**values))


async def test_a_stored_token_no_key_opens_is_replaced_by_a_refresh_not_a_500(
    web: WebContext, api: Api, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(web, google, token_seconds=3000)
    await seal_under_a_retired_key(web, mailbox_id, refresh_token=False)
    response = await api().post(f"/v1/mailboxes/{mailbox_id}/access-token")
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert token.startswith("ya29.")
    assert "retired" not in token
    assert await token_requests(google) == 1
    assert await audit(web) == [(KEY_NAME, mailbox_id, True)]  # the token handed out, once; none for the unreadable
    again = await api().post(f"/v1/mailboxes/{mailbox_id}/access-token")
    assert again.json()["access_token"] == token  # the new one is stored under the current key
    assert await token_requests(google) == 1


async def test_no_readable_token_at_all_is_503_and_a_config_failure_not_a_500(
    web: WebContext, api: Api, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(web, google, token_seconds=3000)
    await seal_under_a_retired_key(web, mailbox_id, refresh_token=True)
    response = await api().post(f"/v1/mailboxes/{mailbox_id}/access-token")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "refresh_failed"
    assert "SECRET" not in response.text
    assert "retired" not in response.text
    assert await token_requests(google) == 0
    assert await audit(web) == []
    mailbox = await row(web, mailbox_id)
    assert (mailbox.failure_kind, mailbox.token_refresh_error.split(":")[0]) == ("config", "token_undecryptable")


async def test_min_valid_seconds_outside_0_to_1800_and_bad_bodies_get_422(web: WebContext, api: Api) -> None:
    client = api()
    for body in ({"min_valid_seconds": 1801}, {"min_valid_seconds": -1}, {"min_valid_seconds": "60"},
                 {"min_valid_seconds": True}, [1]):  # fmt: skip
        response = await client.post("/v1/mailboxes/1/access-token", json=body)
        assert response.status_code == 422, body
    broken = await client.post("/v1/mailboxes/1/access-token", content=b"{not json", headers={"content-type": "x"})
    assert broken.json()["error"]["code"] == "invalid_request"
    assert (await client.post("/v1/mailboxes/999/access-token")).status_code == 404
