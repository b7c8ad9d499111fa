"""The web app's /metrics: the fleet gauges read at each scrape, and refresh cycles run in its process counted."""

from __future__ import annotations

from datetime import timedelta

import respx
from prometheus_client.parser import text_string_to_metric_families

from statemachine.services.cycle import run_cycle
from tests.database import TOKEN_URL
from tests.web.support import Browser, mailbox, now
from web.pages import WebContext


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in a /metrics page (0 when the series is absent)."""
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


async def test_the_gauges_are_read_from_the_database_at_each_scrape(web: WebContext, browser: Browser) -> None:
    # the scan interval is 60 s: a mailbox due more than two scans ago is overdue, one due a minute ago is not
    await mailbox(web, address="late@gmail.test", next_refresh_at=now() - timedelta(minutes=3))
    await mailbox(web, address="due@gmail.test", next_refresh_at=now() - timedelta(minutes=1))
    await mailbox(web, address="trouble@gmail.test", state="degraded", next_refresh_at=now() + timedelta(minutes=5))
    text = (await browser().get("/metrics")).text
    assert sample(text, "tokenwarden_mailboxes_overdue") == 1
    assert sample(text, "tokenwarden_mailboxes", state="degraded") == 1
    assert sample(text, "tokenwarden_mailboxes", state="healthy") == 2
    assert sample(text, "tokenwarden_outbox_pending") == 0


async def test_a_cycle_run_by_the_web_process_is_counted_in_its_metrics(web: WebContext, browser: Browser) -> None:
    mailbox_id = await mailbox(web)
    before = sample((await browser().get("/metrics")).text, "tokenwarden_refresh_cycles_total",
                    provider="google", outcome="success")  # fmt: skip
    with respx.mock(using="httpx", assert_all_mocked=True) as provider:  # only the token endpoint, not the app
        provider.post(TOKEN_URL).respond(200, json={"access_token": "ya29.fresh", "expires_in": 3600})
        await run_cycle(web.runtime.cycle_deps(), mailbox_id, actor="api")
    after = sample((await browser().get("/metrics")).text, "tokenwarden_refresh_cycles_total",
                   provider="google", outcome="success")  # fmt: skip
    assert after == before + 1
