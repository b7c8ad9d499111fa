"""The dashboard's "Connect a Gmail mailbox" button in Chromium, against `tokenwarden serve` and the sandbox Google."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from devkit.serving import RunningServer
from tests.web.support import OWNER, start_serving, stop_serving
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, OUTPUT, cli, require_chromium, sign_in

ANA = {"email": "ana.new@gmail.test", "sub": "104400000000000000042"}


@pytest.fixture
def stack(web_env: dict[str, str], sandbox: RunningServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    httpx.post(f"{sandbox.url}/_sandbox/accounts", json=ANA).raise_for_status()
    env = {**web_env, "GOOGLE_AUTH_URL": f"{sandbox.url}/authorize", "GOOGLE_TOKEN_URL": f"{sandbox.url}/token"}
    url, process = start_serving(env, tmp_path / "serve.log")
    try:
        yield {**env, "TOKENWARDEN_BASE_URL": url}
    finally:
        stop_serving(process)


def test_the_connect_button_adds_a_mailbox_through_the_consent(
    stack: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_chromium()
    for key, value in stack.items():
        monkeypatch.setenv(key, value)
    cli(capsys, "user", "add", OWNER)
    link = cli(capsys, "login-link", OWNER)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 960, "height": 720})
            sign_in(page, link, OWNER)
            expect(page.locator("[data-mailbox]")).to_have_count(0)
            page.get_by_role("button", name="Connect a Gmail mailbox").click()
            expect(page.get_by_role("heading", name="Choose an account")).to_be_visible()  # the sandbox Google
            page.locator(f'li[data-sub="{ANA["sub"]}"] button.allow').click()
            card = page.locator("[data-mailbox]")
            expect(card).to_have_count(1)
            expect(card).to_have_attribute("data-state", "healthy")
            expect(card).to_contain_text(ANA["email"])
            page.screenshot(path=str(OUTPUT / "dashboard-connected.png"), full_page=True)
        finally:
            browser.close()
