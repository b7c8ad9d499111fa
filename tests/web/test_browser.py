"""The whole story in a real browser: Debian's Chromium driven by Playwright against `tokenwarden serve`.

A user signs in with a login link, sees the red banner of a mailbox whose grant Google revoked,
presses Reconnect, consents at the sandbox Google and lands back on the dashboard with a
confirmation and no banner; then does the same for an Outlook / Microsoft 365 mailbox whose organisation now
requires a multi-factor sign-in, at the sandbox Microsoft. An operator then finds the `reconnected` row in the
first mailbox's history.
Everything runs over real HTTP on 127.0.0.1: the app in its own process (the operators' command), the
sandbox provider in a thread. Screenshots go to test-output/browser/; with TOKENWARDEN_UPDATE_DOCS=1
the dashboard one is also copied to docs/dashboard.png (the README's picture).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from devkit.serving import RunningServer
from statemachine.cli.main import main
from tests.web.support import ADMIN, OWNER, ROOT, start_serving, stop_serving

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    *("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"),
    *("--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"),
]
OUTPUT = ROOT / "test-output" / "browser"
ACCOUNTS = {
    "ana@gmail.test": "104400000000000000001",
    "ana.work@gmail.test": "104400000000000000002",
    "ana.home@gmail.test": "104400000000000000003",
}
OUTLOOK, OUTLOOK_TID, OUTLOOK_OID = "ana@contoso.test", "72f988bf-86f1-41af-91ab-2d7cd011db47", "0000-66f3-ea81"


def require_chromium() -> None:
    """In CI the browser test must run; elsewhere it is skipped, saying why, when Chromium is missing."""
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {CHROMIUM} is missing: .ci/run installs Debian's chromium package")
    pytest.skip(f"browser test skipped: no Chromium at {CHROMIUM} (install it: apt-get install chromium)")


@pytest.fixture
def sandbox(sandbox: RunningServer) -> RunningServer:
    """The shared sandbox fixture, with the accounts that consent in this test."""
    for email, sub in ACCOUNTS.items():
        httpx.post(f"{sandbox.url}/_sandbox/accounts", json={"email": email, "sub": sub}).raise_for_status()
    return sandbox


@pytest.fixture
def outlook(microsoft_sandbox: RunningServer) -> RunningServer:
    """The sandbox Microsoft, with the Outlook account that consents in this test."""
    account = {"email": OUTLOOK, "sub": OUTLOOK_OID, "tid": OUTLOOK_TID}
    httpx.post(f"{microsoft_sandbox.url}/_sandbox/accounts", json=account).raise_for_status()
    return microsoft_sandbox


@pytest.fixture
def stack(
    web_env: dict[str, str], sandbox: RunningServer, outlook: RunningServer, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """`tokenwarden serve` pointed at the sandboxes; yields the environment, TOKENWARDEN_BASE_URL included."""
    microsoft = f"{outlook.url}/common/oauth2/v2.0"
    env = {**web_env, "GOOGLE_AUTH_URL": f"{sandbox.url}/authorize", "GOOGLE_TOKEN_URL": f"{sandbox.url}/token",
           "MICROSOFT_AUTH_URL": f"{microsoft}/authorize", "MICROSOFT_TOKEN_URL": f"{microsoft}/token",
           "TOKENWARDEN_CONFIRM_PERMANENT_SECONDS": "0"}  # fmt: skip
    url, process = start_serving(env, tmp_path / "serve.log")
    try:
        yield {**env, "TOKENWARDEN_BASE_URL": url}
    finally:
        stop_serving(process)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    status = main(list(args))
    out, err = capsys.readouterr()
    assert status == 0, err
    return out.strip()


def connect(capsys: pytest.CaptureFixture[str], sandbox: RunningServer, address: str, fault: dict | None) -> str:
    """Connect a mailbox with a sandbox refresh token, optionally failing as told, and run one refresh cycle."""
    grant = httpx.post(f"{sandbox.url}/_sandbox/tokens", json={"email": address}).json()
    if fault is not None:
        httpx.post(f"{sandbox.url}/_sandbox/faults", json={**fault, "refresh_token": grant["refresh_token"]})
    mailbox_id = cli(capsys, "mailbox", "add", "--user", OWNER, "--provider", "google", "--address", address,
                     "--refresh-token", grant["refresh_token"])  # fmt: skip
    for _ in range(1 if fault is None or fault["mode"] == "revoke" else 2):
        cli(capsys, "refresh", mailbox_id)
    return mailbox_id


def connect_outlook(capsys: pytest.CaptureFixture[str], outlook: RunningServer) -> str:
    """An Outlook mailbox added by the CLI: its first refresh works (and names its account), then its organisation
    demands a multi-factor sign-in."""
    grant = httpx.post(f"{outlook.url}/_sandbox/tokens", json={"email": OUTLOOK}).json()
    mailbox_id = cli(capsys, "mailbox", "add", "--user", OWNER, "--provider", "microsoft", "--address", OUTLOOK,
                     "--refresh-token", grant["refresh_token"])  # fmt: skip
    cli(capsys, "refresh", mailbox_id)
    fault = {"mode": "mfa_required", "refresh_token": grant["refresh_token"]}  # follows the rotated token
    httpx.post(f"{outlook.url}/_sandbox/faults", json=fault).raise_for_status()
    cli(capsys, "refresh", mailbox_id)
    return mailbox_id


def seed(capsys: pytest.CaptureFixture[str], sandbox: RunningServer, outlook: RunningServer) -> tuple[str, str]:
    """The owner's mailboxes: revoked (disconnected), failing with 503s (degraded), healthy, and an Outlook one
    that needs a multi-factor sign-in (disconnected)."""
    cli(capsys, "user", "add", OWNER, "--name", "Ana")
    cli(capsys, "user", "add", ADMIN, "--admin")
    revoked = connect(capsys, sandbox, "ana@gmail.test", {"mode": "revoke"})
    connect(capsys, sandbox, "ana.work@gmail.test", {"mode": "http_5xx", "status": 503})
    connect(capsys, sandbox, "ana.home@gmail.test", None)
    return revoked, connect_outlook(capsys, outlook)


def sign_in(page: Page, link: str, email: str) -> None:
    page.goto(link)
    page.get_by_role("button", name=f"Continue as {email}").click()


def user_reconnects(browser: Browser, link: str, mailbox_id: str, outlook_id: str) -> None:
    """The owner sees the red banner (and the yellow one), presses Reconnect and consents as the mailbox's account;
    then the same for the Outlook mailbox."""
    user = browser.new_page(viewport={"width": 960, "height": 720})
    sign_in(user, link, OWNER)
    card = user.locator(f"#mailbox-{mailbox_id}")
    expect(card).to_have_attribute("data-state", "disconnected")
    banner = card.locator('[data-banner="disconnected"]')
    expect(banner).to_contain_text("🔴 Gmail connection lost")
    expect(banner).to_contain_text("Google says access was revoked or has expired")
    trouble = user.locator('[data-state="degraded"] [data-banner="trouble"]')
    expect(trouble).to_contain_text("⚠️ Having trouble connecting. Retrying automatically.")
    user.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)
    user.set_viewport_size({"width": 390, "height": 720})  # a phone: nothing may overflow sideways
    assert user.evaluate("document.documentElement.scrollWidth") <= 390
    user.screenshot(path=str(OUTPUT / "dashboard-phone.png"), full_page=True)
    user.set_viewport_size({"width": 960, "height": 720})

    banner.get_by_role("button", name="Reconnect Gmail").click()
    expect(user.get_by_role("heading", name="Choose an account")).to_be_visible()  # the sandbox Google
    user.locator(f'li[data-sub="{ACCOUNTS["ana@gmail.test"]}"] button.allow').click()
    expect(user.locator('[data-flash="success"]')).to_have_text("Gmail reconnected: ana@gmail.test is working again.")
    expect(card).to_have_attribute("data-state", "healthy")
    expect(card.locator('[data-banner="disconnected"]')).to_have_count(0)
    user.screenshot(path=str(OUTPUT / "dashboard-reconnected.png"), full_page=True)
    outlook_reconnects(user, outlook_id)


def outlook_reconnects(user: Page, mailbox_id: str) -> None:
    """Microsoft's words on the banner (not "revoked"), and a reconnect at the sandbox Microsoft by tid and oid."""
    card = user.locator(f"#mailbox-{mailbox_id}")
    banner = card.locator('[data-banner="disconnected"]')
    expect(banner).to_contain_text("🔴 Outlook / Microsoft 365 connection lost")
    expect(banner).to_contain_text("Microsoft says your organisation now requires multi-factor sign-in")
    expect(banner).not_to_contain_text("revoked")
    banner.get_by_role("button", name="Reconnect Outlook / Microsoft 365").click()
    expect(user.get_by_role("heading", name="Choose an account")).to_be_visible()
    expect(user.locator(".sandbox")).to_contain_text("Sandbox Microsoft")
    user.locator(f'li[data-sub="{OUTLOOK_OID}"] button.allow').click()
    flash = f"Outlook / Microsoft 365 reconnected: {OUTLOOK} is working again."
    expect(user.locator('[data-flash="success"]')).to_have_text(flash)
    expect(card).to_have_attribute("data-state", "healthy")
    expect(user.locator('[data-banner="disconnected"]')).to_have_count(0)
    user.screenshot(path=str(OUTPUT / "dashboard-outlook-reconnected.png"), full_page=True)


def operator_reads_the_history(browser: Browser, link: str, mailbox_id: str) -> None:
    operator = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
    sign_in(operator, link, ADMIN)
    operator.get_by_role("link", name="Operations").click()
    expect(operator.locator('[data-panel="success-rate"]')).to_contain_text("target > 95 %")
    cycles = operator.locator('svg[data-chart="cycles"]')
    expect(cycles).to_be_visible()
    expect(cycles.locator('line[data-target="95"]')).to_have_count(1)
    expect(cycles.locator('rect[data-kind="permanent"]')).to_have_count(1)  # this hour's revoked grant
    expect(cycles.locator('rect[data-kind="transient"]')).to_have_count(1)  # and the 503s
    states = operator.locator('svg[data-chart="states"]')
    for state in ("healthy", "degraded"):  # a column for each hour that had the state (the two providers differ)
        expect(states.locator(f'rect[data-kind="{state}"]').first).to_be_visible()
    assert operator.evaluate("document.documentElement.scrollWidth") <= 1200  # the charts fit the page
    operator.screenshot(path=str(OUTPUT / "ops.png"), full_page=True)
    operator.locator(f'tr[data-mailbox="{mailbox_id}"] a').first.click()
    row = operator.locator('tr[data-event="reconnected"]')
    expect(row).to_contain_text("disconnected → healthy")
    expect(row).to_contain_text(f"user:{OWNER}")
    expect(operator.locator('tr[data-event="refresh_failed_permanent"]')).to_contain_text("invalid_grant")
    timeline = operator.locator('svg[data-chart="timeline"]')
    expect(timeline).to_be_visible()
    drawn = timeline.locator("rect:not([data-kind=event])")
    expect(drawn).to_have_count(3)
    assert [drawn.nth(i).get_attribute("data-kind") for i in range(3)] == ["healthy", "disconnected", "healthy"]
    operator.screenshot(path=str(OUTPUT / "ops-mailbox.png"), full_page=True)


def test_sign_in_see_the_banner_reconnect_and_read_the_history(
    stack: dict[str, str], sandbox: RunningServer, outlook: RunningServer, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    require_chromium()
    for key, value in stack.items():
        monkeypatch.setenv(key, value)
    mailbox_id, outlook_id = seed(capsys, sandbox, outlook)
    # the CLI runs asyncio.run(), which cannot run inside Playwright's sync API: make the links first
    user_link, operator_link = cli(capsys, "login-link", OWNER), cli(capsys, "login-link", ADMIN)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            user_reconnects(browser, user_link, mailbox_id, outlook_id)
            operator_reads_the_history(browser, operator_link, mailbox_id)
        finally:
            browser.close()
    if os.environ.get("TOKENWARDEN_UPDATE_DOCS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(OUTPUT / "dashboard.png", ROOT / "docs" / "dashboard.png")
