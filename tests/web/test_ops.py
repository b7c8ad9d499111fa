"""Operator pages, their actions and the JSON API, with the authorization rules of each."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import insert

from statemachine.store import queries
from statemachine.store.models import Incident, Notification, RefreshOutcome
from statemachine.store.outcome_minutes import roll_up
from tests.web.support import ADMIN, OTHER, OWNER, Browser, SignIn, csrf_of, mailbox, now, row
from web.pages import WebContext

OPS_PAGES = ["/ops", "/ops/mailboxes/{id}", "/api/mailboxes?all=1", "/api/ops/summary"]


async def outcomes(web: WebContext, ok: int, failed: int, *, hours_ago: float = 1) -> None:
    at = now() - timedelta(hours=hours_ago)
    rows = [{"provider": "google", "mailbox_id": 1, "outcome": "success", "at": at}] * ok
    rows += [{"provider": "google", "mailbox_id": 1, "outcome": "transient", "code": "http_503", "at": at}] * failed
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(insert(RefreshOutcome), rows)


@pytest.mark.parametrize("path", OPS_PAGES)
async def test_operator_pages_need_the_admin_flag(
    web: WebContext, sign_in: SignIn, browser: Browser, path: str
) -> None:
    mailbox_id = await mailbox(web)
    url = path.format(id=mailbox_id)
    assert (await browser().get(url)).status_code == 401
    assert (await (await sign_in()).get(url)).status_code == 403
    assert (await (await sign_in(ADMIN, admin=True)).get(url)).status_code == 200


async def test_overview_counts_rate_and_incidents(web: WebContext, sign_in: SignIn) -> None:
    await mailbox(web)
    await mailbox(
        web, address="b@gmail.test", state="degraded", token_refresh_failed_at=now(), failure_kind="transient"
    )
    await outcomes(web, ok=97, failed=3)
    await outcomes(web, ok=0, failed=50, hours_ago=25)  # outside the window
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(insert(Incident).values(provider="google", cause="token endpoint answers 503"))
    page = (await (await sign_in(ADMIN, admin=True)).get("/ops")).text
    assert 'data-rate="0.9700"' in page
    assert "97 of 100 cycles · target &gt; 95 %" in page
    assert "(met)" in page
    assert "token endpoint answers 503" in page
    counts = re.search(r'<tr data-provider="google">.*?</tr>', page, re.S)
    assert counts is not None
    assert re.search(r'data-count="healthy"><a [^>]*>1<', counts.group(0))
    assert re.search(r'data-count="degraded"><a [^>]*>1<', counts.group(0))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"a@gmail.test", "b@gmail.test", "c@gmail.test"}),
        ("?state=disconnected", {"c@gmail.test"}),
        ("?q=B%40GMAIL", {"b@gmail.test"}),
        ("?q=%25", set()),  # a LIKE wildcard is searched for literally
        ("?failing=24h", {"c@gmail.test"}),
        ("?provider=google", {"a@gmail.test", "b@gmail.test", "c@gmail.test"}),
        ("?provider=microsoft", set()),
        ("?provider=yahoo", {"a@gmail.test", "b@gmail.test", "c@gmail.test"}),  # not registered: ignored
        ("?state=bogus&failing=forever", {"a@gmail.test", "b@gmail.test", "c@gmail.test"}),
    ],
)
async def test_the_mailbox_list_filters(web: WebContext, sign_in: SignIn, query: str, expected: set[str]) -> None:
    await mailbox(web, address="a@gmail.test")
    await mailbox(
        web, address="b@gmail.test", state="retrying", token_refresh_failed_at=now(), failure_kind="transient"
    )
    old = now() - timedelta(days=2)
    await mailbox(
        web, address="c@gmail.test", state="disconnected", token_refresh_failed_at=old, failure_kind="permanent"
    )
    page = (await (await sign_in(ADMIN, admin=True)).get(f"/ops{query}")).text
    listed = set(re.findall(r'<td><a href="/ops/mailboxes/\d+">([^<]+@[^<]+)</a></td>', page))
    assert listed == expected


async def test_mailbox_page_shows_history_and_outbox_and_actions_are_recorded(web: WebContext, sign_in: SignIn) -> None:
    mailbox_id = await mailbox(web)
    admin = await sign_in(ADMIN, admin=True)
    token = await csrf_of(admin, f"/ops/mailboxes/{mailbox_id}")
    done = await admin.post(
        f"/ops/mailboxes/{mailbox_id}/disconnect", data={"csrf_token": token, "reason": "owner asked by phone"}
    )
    assert (done.status_code, done.headers["location"]) == (303, f"/ops/mailboxes/{mailbox_id}")
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(
            insert(Notification).values(
                mailbox_id=mailbox_id, kind="token_refresh_final_failure", recipient=OWNER, subject="Gmail lost",
                body_text="t", body_html="h", dedupe_key="k1", message_id="<m1@test>",
            )
        )  # fmt: skip
    page = (await admin.get(f"/ops/mailboxes/{mailbox_id}")).text
    assert "Disconnected. The owner sees the red banner" in page
    timeline = re.search(r'<tr data-event="ops_disconnect">.*?</tr>', page, re.S)
    assert timeline is not None
    for text in ("healthy → disconnected", "owner asked by phone", f"operator:{ADMIN}"):
        assert text in timeline.group(0)
    assert 'data-email="token_refresh_final_failure"' in page
    again = await admin.post(f"/ops/mailboxes/{mailbox_id}/disconnect", data={"csrf_token": token})
    assert again.status_code == 303
    assert "Nothing was done" in (await admin.get(f"/ops/mailboxes/{mailbox_id}")).text
    retry = await admin.post(f"/ops/mailboxes/{mailbox_id}/retry-now", data={"csrf_token": token})
    assert retry.status_code == 303
    mailbox_row = await row(web, mailbox_id)
    assert mailbox_row.state == "retrying"
    assert mailbox_row.next_refresh_at is not None
    assert mailbox_row.next_refresh_at <= now()
    async with web.runtime.sessionmaker() as session:
        actors = [(r["event"], r["actor"]) for r in await queries.history(session, mailbox_id)]
    assert actors == [("ops_disconnect", f"operator:{ADMIN}"), ("ops_retry_now", f"operator:{ADMIN}")]


async def test_actions_need_csrf_and_the_admin_flag(web: WebContext, sign_in: SignIn) -> None:
    mailbox_id = await mailbox(web)
    admin = await sign_in(ADMIN, admin=True)
    user = await sign_in()
    for action in ("retry-now", "disconnect"):
        url = f"/ops/mailboxes/{mailbox_id}/{action}"
        assert (await admin.post(url, data={})).status_code == 403
        assert (await admin.post(url, data={"csrf_token": "f" * 64})).status_code == 403
        assert (await user.post(url, data={"csrf_token": await csrf_of(user)})).status_code == 403
        assert (await admin.get(url)).status_code == 405
    assert (
        await admin.post("/ops/mailboxes/999999/disconnect", data={"csrf_token": await csrf_of(admin)})
    ).status_code == 404
    assert (await row(web, mailbox_id)).state == "healthy"


async def test_api_users_read_their_own_mailboxes_only(web: WebContext, sign_in: SignIn, browser: Browser) -> None:
    mine = await mailbox(web)
    theirs = await mailbox(web, user=OTHER, address="them@gmail.test")
    client = await sign_in()
    listed = (await client.get("/api/mailboxes")).json()["mailboxes"]
    assert [m["id"] for m in listed] == [mine]
    assert (await client.get(f"/api/mailboxes/{mine}")).json()["address"] == "ana@gmail.test"
    assert (await client.get(f"/api/mailboxes/{mine}/history")).json() == {"mailbox_id": mine, "history": []}
    for path in (f"/api/mailboxes/{theirs}", f"/api/mailboxes/{theirs}/history", "/api/mailboxes/999999"):
        answer = await client.get(path)
        assert answer.status_code == 404
        assert answer.json() == {"error": answer.json()["error"]}
    assert (await client.get("/api/mailboxes?all=1")).status_code == 403
    assert (await client.get("/api/mailboxes?state=bogus")).status_code == 400
    assert (await browser().get("/api/mailboxes")).status_code == 401


async def test_api_operators_read_every_mailbox_and_no_secret(web: WebContext, sign_in: SignIn) -> None:
    first = await mailbox(web)
    second = await mailbox(web, user=OTHER, address="them@gmail.test")
    admin = await sign_in(ADMIN, admin=True)
    everything = await admin.get("/api/mailboxes?all=1")
    assert [m["id"] for m in everything.json()["mailboxes"]] == [first, second]
    assert (await admin.get("/api/mailboxes")).json() == {"mailboxes": []}  # an operator's own
    assert (await admin.get(f"/api/mailboxes/{second}")).status_code == 200
    summary = (await admin.get("/api/ops/summary")).json()
    assert summary["success_rate_24h"]["rate"] is None
    for body in (everything.text, (await admin.get(f"/api/mailboxes/{second}")).text):
        assert "SECRET" not in body
        assert "ciphertext" not in body


async def test_the_overview_draws_the_last_day(web: WebContext, sign_in: SignIn) -> None:
    mailbox_id = await mailbox(web)
    await outcomes(web, ok=90, failed=10, hours_ago=3)
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(insert(Incident).values(provider="google", cause="token endpoint answers 503",
                                                      opened_at=now() - timedelta(hours=3)))  # fmt: skip
    admin = await sign_in(ADMIN, admin=True)
    token = await csrf_of(admin, f"/ops/mailboxes/{mailbox_id}")
    await admin.post(f"/ops/mailboxes/{mailbox_id}/disconnect", data={"csrf_token": token})
    page = (await admin.get("/ops")).text
    cycles = re.search(r'<svg class="chart" data-chart="cycles".*?</svg>', page, re.S)
    assert cycles is not None
    assert re.search(r'data-kind="success"[^>]*height="135.0"><title>[^<]*90.0% of 100 cycles', cycles.group(0))
    assert cycles.group(0).count('data-kind="transient"') == 1
    assert "google incident (token endpoint answers 503)" in cycles.group(0)
    assert 'data-target="95"' in cycles.group(0)
    states = re.search(r'<svg class="chart" data-chart="states".*?</svg>', page, re.S)
    assert states is not None
    # connected and disconnected within this hour: no column before it, one disconnected mailbox in it
    assert re.findall(r'data-kind="(\w+)"', states.group(0)) == ["disconnected"]
    assert "now: 1 disconnected" in states.group(0)


async def shown(admin: httpx.AsyncClient) -> tuple[object, ...]:
    """The success rate /ops and /api/ops/summary show, and the titles of the cycles chart's bars."""
    page = (await admin.get("/ops")).text
    cycles = re.search(r'<svg class="chart" data-chart="cycles".*?</svg>', page, re.S)
    assert cycles is not None
    rate = re.search(r'data-rate="([0-9.]+)"', page)
    assert rate is not None
    summary = (await admin.get("/api/ops/summary")).json()["success_rate_24h"]
    return (
        rate.group(1),
        summary["succeeded"],
        summary["cycles"],
        re.findall(r"<title>([^<]*)</title>", cycles.group(0)),
    )


async def test_the_rate_and_the_chart_are_the_same_whether_the_outcomes_are_rolled_up_or_not(
    web: WebContext, sign_in: SignIn
) -> None:
    await outcomes(web, ok=60, failed=5, hours_ago=3)
    await outcomes(web, ok=0, failed=50, hours_ago=25)  # outside the window
    await outcomes(web, ok=30, failed=5, hours_ago=0)
    admin = await sign_in(ADMIN, admin=True)
    raw = await shown(admin)  # nothing rolled up yet: all read from the outcomes, as before the rollup
    assert raw[:3] == ("0.9000", 90, 100)
    bars = raw[3]
    assert isinstance(bars, list)
    assert sum("92.3% of 65 cycles succeeded" in bar for bar in bars) == 2  # its success and transient parts
    assert sum("85.7% of 35 cycles succeeded" in bar for bar in bars) == 2
    await roll_up(web.runtime.sessionmaker, now())  # the current minute's 35 stay raw
    assert await shown(admin) == raw
    await roll_up(web.runtime.sessionmaker, now() + timedelta(minutes=1))  # all of them rolled up
    assert await shown(admin) == raw


async def test_a_mailbox_page_draws_its_timeline(web: WebContext, sign_in: SignIn) -> None:
    mailbox_id = await mailbox(web)
    admin = await sign_in(ADMIN, admin=True)
    token = await csrf_of(admin, f"/ops/mailboxes/{mailbox_id}")
    await admin.post(f"/ops/mailboxes/{mailbox_id}/disconnect", data={"csrf_token": token})
    await admin.post(f"/ops/mailboxes/{mailbox_id}/retry-now", data={"csrf_token": token})
    page = (await admin.get(f"/ops/mailboxes/{mailbox_id}")).text
    timeline = re.search(r'<svg class="chart" data-chart="timeline".*?</svg>', page, re.S)
    assert timeline is not None
    drawn = re.findall(r'data-kind="(\w+)"', timeline.group(0))
    assert drawn == ["healthy", "disconnected", "retrying", "event", "event"]
    assert "ops_disconnect: healthy → disconnected" in timeline.group(0)


async def test_microsoft_mailboxes_and_incidents_are_shown_in_microsoft_words(web: WebContext, sign_in: SignIn) -> None:
    await mailbox(web)
    outlook = await mailbox(web, address="ana@contoso.test", provider="microsoft", state="degraded")
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(insert(Incident).values(provider="microsoft", cause="outage"))
    admin = await sign_in(ADMIN, admin=True)
    page = (await admin.get("/ops")).text
    assert re.search(r'<tr data-provider="microsoft"><td>Outlook / Microsoft 365</td>', page)
    assert re.search(r'data-incident="\d+"><strong>Outlook / Microsoft 365</strong>', page)
    filtered = (await admin.get("/ops?provider=microsoft")).text
    assert "ana@contoso.test" in filtered
    assert "ana@gmail.test" not in filtered
    detail = (await admin.get(f"/ops/mailboxes/{outlook}")).text
    assert "Outlook / Microsoft 365" in detail


async def test_control_characters_and_huge_ids_end_on_a_4xx_page(web: WebContext, sign_in: SignIn) -> None:
    mailbox_id = await mailbox(web)
    admin = await sign_in(ADMIN, admin=True)
    search = await admin.get("/ops", params={"q": "ana\x00"})
    assert (search.status_code, "contains control characters" in search.text) == (400, True)
    token = await csrf_of(admin, f"/ops/mailboxes/{mailbox_id}")
    refused = await admin.post(
        f"/ops/mailboxes/{mailbox_id}/disconnect", data={"csrf_token": token, "reason": "asked\x00by phone"}
    )
    assert refused.status_code == 400
    assert (await row(web, mailbox_id)).state == "healthy"
    for path in (f"/ops/mailboxes/{2**70}", f"/api/mailboxes/{2**70}"):
        assert (await admin.get(path)).status_code == 404


async def test_the_operator_list_is_paged_and_the_links_keep_the_filters(
    web: WebContext, sign_in: SignIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("web.reports.LIST_LIMIT", 2)
    for i in range(5):
        await mailbox(web, address=f"box{i}@gmail.test")
    admin = await sign_in(ADMIN, admin=True)
    listed: list[str] = []
    url = "/ops?state=healthy"
    while url:
        page = (await admin.get(url)).text
        listed += re.findall(r'<td><a href="/ops/mailboxes/\d+">([^<]+@[^<]+)</a></td>', page)
        found = re.search(r'<a href="(/ops\?[^"]+)" rel="next"', page)
        url = found.group(1).replace("&amp;", "&") if found else ""
        assert not found or "state=healthy" in url
    assert listed == [f"box{i}@gmail.test" for i in range(5)]
    assert "5 matching, showing 5 to 5." in page
    assert 'rel="prev"' in page
    for garbage in ("abc", "-1", "0", "9" * 30):
        assert "showing 1 to 2" in (await admin.get(f"/ops?page={garbage}")).text
