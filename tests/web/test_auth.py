"""Sign-in links, sessions and sign-out, through the real app and database."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from statemachine.cli.main import main
from statemachine.services.accounts import UnknownUserError
from tests.web.support import ADMIN, OWNER, Browser, SignIn, add_user, csrf_of, login_link, now, use_link
from web.pages import WebContext
from web.tables import LoginToken, WebSession


async def test_a_login_link_starts_a_session_once(web: WebContext, browser: Browser) -> None:
    await add_user(web, OWNER)
    link = await login_link(web, OWNER)
    first, second = browser(), browser()
    response = await use_link(first, link)
    assert (response.status_code, response.headers["location"]) == (303, "/")
    assert OWNER in (await first.get("/")).text
    again = await second.get(link)
    assert again.status_code == 400
    assert "expired or was already used" in again.text
    token = link.split("token=", 1)[1]
    replay = await second.post("/login", data={"token": token})
    assert replay.status_code == 400
    assert "You are not signed in" in (await second.get("/")).text


async def test_opening_the_link_alone_does_not_use_it_up(web: WebContext, browser: Browser) -> None:
    """Mail scanners prefetch links with GET: only the POST behind "Continue" signs in."""
    await add_user(web, OWNER)
    link = await login_link(web, OWNER)
    assert (await browser().get(link)).status_code == 200
    assert (await use_link(browser(), link)).status_code == 303


async def test_an_expired_link_is_refused(web: WebContext, browser: Browser) -> None:
    await add_user(web, OWNER)
    link = await login_link(web, OWNER, minutes=1)
    async with web.runtime.sessionmaker() as session, session.begin():
        await session.execute(update(LoginToken).values(expires_at=now() - timedelta(seconds=1)))
    page = await browser().get(link)
    assert page.status_code == 400
    assert "expired or was already used" in page.text


@pytest.mark.parametrize("token", ["", "not-a-signed-token", "x" * 40 + ".AbCdEf.GhIjKl"])
async def test_a_tampered_or_missing_token_is_refused(browser: Browser, token: str) -> None:
    client = browser()
    assert (await client.get(f"/login?token={token}")).status_code == 400
    assert (await client.post("/login", data={"token": token})).status_code == 400


async def test_the_session_cookie_carries_only_a_signed_id(web: WebContext, browser: Browser) -> None:
    await add_user(web, OWNER)
    response = await use_link(browser(), await login_link(web, OWNER))
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-tokenwarden=")  # the test base URL is https
    for flag in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
        assert flag.lower() in cookie.lower()
    assert OWNER not in cookie
    async with web.runtime.sessionmaker() as session:
        stored = await session.scalar(select(WebSession.token_hash))
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert stored is not None
    assert stored not in value


async def test_sign_out_ends_the_session_on_the_server(web: WebContext, sign_in: SignIn, browser: Browser) -> None:
    client = await sign_in()
    stolen = dict(client.cookies)  # a copy of the cookie, as if taken from this browser
    page = await client.post("/logout", data={"csrf_token": await csrf_of(client)})
    assert page.status_code == 200
    assert "You are signed out" in page.text
    copy = browser()
    copy.cookies.update(stolen)
    assert "You are not signed in" in (await copy.get("/")).text
    assert (await copy.get("/api/mailboxes")).status_code == 401
    async with web.runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).where(WebSession.revoked_at.is_not(None))) == 1


async def test_sign_out_needs_the_csrf_token(sign_in: SignIn) -> None:
    client = await sign_in()
    for data in ({}, {"csrf_token": "0" * 64}):
        refused = await client.post("/logout", data=data)
        assert refused.status_code == 403
    assert OWNER in (await client.get("/")).text


async def test_a_post_from_another_site_is_refused_even_with_the_token(sign_in: SignIn) -> None:
    client = await sign_in()
    token = await csrf_of(client)
    refused = await client.post("/logout", data={"csrf_token": token}, headers={"Origin": "https://evil.test"})
    assert refused.status_code == 403
    ok = await client.post("/logout", data={"csrf_token": token}, headers={"Origin": "https://tokenwarden.test"})
    assert ok.status_code == 200


async def test_signing_in_again_ends_the_previous_session(web: WebContext, sign_in: SignIn) -> None:
    client = await sign_in()
    old = dict(client.cookies)
    assert (await use_link(client, await login_link(web, OWNER))).status_code == 303
    assert old != dict(client.cookies)
    async with web.runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).where(WebSession.revoked_at.is_(None))) == 1


async def test_login_link_for_an_unknown_user_is_a_clear_error(web: WebContext) -> None:
    with pytest.raises(UnknownUserError, match="tokenwarden user add"):
        await login_link(web, "nobody@example.test")


def test_login_link_command(web_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in web_env.items():
            patch.setenv(key, value)
        assert main(["user", "add", ADMIN, "--admin"]) == 0
        assert main(["login-link", ADMIN, "--minutes", "5"]) == 0
        out = capsys.readouterr().out
        assert re.search(r"^https://tokenwarden\.test/login\?token=[\w.-]+$", out.splitlines()[-1])
        assert main(["login-link", "nobody@example.test"]) == 1
        assert "no user 'nobody@example.test'" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            main(["login-link", ADMIN, "--minutes", "0"])
