"""GET /v1/mailboxes and /v1/mailboxes/{id}: filters, cursor pages, the dashboard's banner texts, reconnect links."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from statemachine.store.models import Mailbox
from tests.web.support import OTHER, mailbox, now
from tests.web.v1.conftest import Api
from web.banners import banner_for
from web.pages import WebContext


async def test_a_disconnected_mailbox_shows_the_dashboards_banner_and_a_reconnect_link(
    web: WebContext, api: Api
) -> None:
    error = "invalid_grant: Google says the grant was revoked."
    mailbox_id = await mailbox(web, state="disconnected", token_refresh_error=error, failure_kind="permanent")
    body = (await api().get(f"/v1/mailboxes/{mailbox_id}")).json()
    banner = banner_for("disconnected", error, None, now(), provider="google", failure_kind="permanent")
    assert body["banner"] == {"level": "danger", "title": banner.title, "text": banner.detail}
    assert body["reason"] == "Google says the grant was revoked."
    assert body["reconnect_url"] == f"https://tokenwarden.test/mailboxes/{mailbox_id}/reconnect"
    assert (body["state"], body["is_active"], body["user_email"], body["address"], body["provider"]) == (
        "disconnected", False, "owner@example.test", "ana@gmail.test", "google",
    )  # fmt: skip
    assert "refresh-SECRET" not in str(body)


async def test_a_healthy_mailbox_has_no_reason_and_no_reconnect_link(web: WebContext, api: Api) -> None:
    body = (await api().get(f"/v1/mailboxes/{await mailbox(web)}")).json()
    assert (body["reason"], body["reconnect_url"], body["banner"]["title"]) == (None, None, "Connected")


async def test_pages_follow_the_cursor_and_filters_apply(web: WebContext, api: Api) -> None:
    ids = [await mailbox(web, address=f"m{n}@gmail.test") for n in range(5)]
    other = await mailbox(web, user=OTHER, address="o@gmail.test", state="retrying")
    client = api()
    seen, cursor = [], None
    while True:
        params = {"limit": "2", "user_email": "owner@example.test", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/mailboxes", params=params)).json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    retrying = (await client.get("/v1/mailboxes", params={"state": "retrying"})).json()["data"]
    assert [m["id"] for m in retrying] == [other]
    assert retrying[0]["banner"]["level"] == "warning"


async def test_removed_mailboxes_are_listed_only_when_asked(web: WebContext, api: Api) -> None:
    kept, removed = await mailbox(web), await mailbox(web, address="gone@gmail.test")
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(update(Mailbox).where(Mailbox.id == removed).values(removed_at=now() - timedelta(1)))
    client = api()
    assert [m["id"] for m in (await client.get("/v1/mailboxes")).json()["data"]] == [kept]
    everything = (await client.get("/v1/mailboxes", params={"include_removed": "true"})).json()["data"]
    assert [m["id"] for m in everything] == [kept, removed]
    assert everything[1]["removed_at"] is not None


async def test_bad_parameters_get_a_clear_422_and_unknown_ids_a_404(web: WebContext, api: Api) -> None:
    client = api()
    for params in ({"limit": "201"}, {"limit": "0"}, {"limit": "x"}, {"cursor": "nope"}, {"state": "sad"},
                   {"include_removed": "yes"}, {"user_email": "a\x00@example.test"},
                   {"user_email": "nobody"}):  # fmt: skip
        response = await client.get("/v1/mailboxes", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "invalid_request"
    for path in ("/v1/mailboxes/999", "/v1/mailboxes/abc", "/v1/mailboxes/99999999999999999999"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "mailbox_not_found"
