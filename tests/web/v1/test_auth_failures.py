"""POST /v1/mailboxes/{id}/auth-failures: the host's provider call was refused with a token we issued."""

from __future__ import annotations

import httpx
import pytest

from statemachine.store import queries
from tests.web.support import row
from tests.web.v1.conftest import KEY_NAME, Api
from tests.web.v1.support import granted_mailbox, token_requests
from web.pages import WebContext


async def reports(web: WebContext, mailbox_id: int) -> list[dict[str, object]]:
    async with web.runtime.sessionmaker() as session:
        return [r for r in await queries.history(session, mailbox_id) if r["event"] == "auth_failure_reported"]


async def test_a_report_runs_one_cycle_and_leaves_a_history_row_then_repeats_are_quiet(
    web: WebContext, api: Api, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(web, google, token_seconds=3000)
    client = api()
    detail = "Gmail answered 401 for ya29.stored-SECRET"
    response = await client.post(f"/v1/mailboxes/{mailbox_id}/auth-failures", json={"status": 401, "detail": detail})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "healthy"
    assert await token_requests(google) == 1
    (report,) = await reports(web, mailbox_id)
    assert report["actor"] == f"api-key:{KEY_NAME}"
    assert "401" in str(report["reason"])
    assert "ya29.stored-SECRET" not in str(report["reason"])  # the host's words, without our token
    fresh = await client.post(f"/v1/mailboxes/{mailbox_id}/access-token")
    assert fresh.json()["access_token"] != "ya29.stored-SECRET"
    again = await client.post(f"/v1/mailboxes/{mailbox_id}/auth-failures", json={"status": 401})
    assert again.status_code == 200
    assert await token_requests(google) == 1
    assert len(await reports(web, mailbox_id)) == 1


async def test_a_report_on_a_disconnected_mailbox_is_noted_without_a_cycle(
    web: WebContext, api: Api, google: httpx.AsyncClient
) -> None:
    mailbox_id = await granted_mailbox(web, google, state="disconnected", failure_kind="permanent")
    response = await api().post(f"/v1/mailboxes/{mailbox_id}/auth-failures", json={"status": 401})
    assert response.json()["state"] == "disconnected"
    assert await token_requests(google) == 0
    assert len(await reports(web, mailbox_id)) == 1
    assert (await row(web, mailbox_id)).state == "disconnected"


@pytest.mark.parametrize("body", [{"status": 200}, {"status": "401"}, {"detail": 5}, {"detail": "x" * 2001}])
async def test_bad_reports_get_422_and_change_nothing(
    web: WebContext, api: Api, google: httpx.AsyncClient, body: dict[str, object]
) -> None:
    mailbox_id = await granted_mailbox(web, google, token_seconds=3000)
    response = await api().post(f"/v1/mailboxes/{mailbox_id}/auth-failures", json=body)
    assert response.status_code == 422
    assert await reports(web, mailbox_id) == []
