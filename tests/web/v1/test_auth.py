"""Every /v1 route refuses a missing, malformed, wrong or revoked key with 401 and no data; keys are only hashed."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.routing import Route

from tests.web.support import SignIn, mailbox
from tests.web.v1.conftest import KEY_NAME, Api
from web.pages import WebContext
from web.tables import ApiKey
from web.v1.keys import revoke_key

PUBLIC = {"/v1/openapi.json"}


def api_routes(app: Starlette) -> list[tuple[str, str]]:
    """(method, path) of every /v1 route the app serves, the mailbox id filled in."""
    found = []
    for route in app.routes:
        if isinstance(route, Route) and route.path.startswith("/v1/") and route.path not in PUBLIC:
            path = re.sub(r"\{[a-z_]+\}", "{id}", route.path)
            found += [(method, path) for method in route.methods or ()]
    return [(m, p) for m, p in found if m != "HEAD"]


async def _revoked(web: WebContext) -> None:
    async with web.runtime.sessionmaker() as session, session.begin():
        await revoke_key(session, KEY_NAME, datetime.now(UTC))


@pytest.mark.parametrize("kind", ["missing", "malformed", "not bearer", "wrong", "revoked"])
async def test_every_route_refuses_a_bad_key_with_401_and_no_data(
    app: Starlette, web: WebContext, api: Api, api_key: str, kind: str
) -> None:
    mailbox_id = await mailbox(web)
    header = {
        "missing": None,
        "malformed": "Bearer",
        "not bearer": f"Basic {api_key}",
        "wrong": "Bearer tw_" + "x" * 43,
        "revoked": f"Bearer {api_key}",
    }[kind]
    if kind == "revoked":
        await _revoked(web)
    client = api(header)
    routes = api_routes(app)
    assert len(routes) >= 4
    for method, path in routes:
        response = await client.request(method, path.format(id=mailbox_id), json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert "ana@gmail.test" not in response.text
        assert response.headers["www-authenticate"] == "Bearer"


async def test_a_dashboard_session_is_no_key(sign_in: SignIn, web: WebContext) -> None:
    client = await sign_in()
    response = await client.get("/v1/mailboxes")
    assert response.status_code == 401


async def test_only_a_hash_of_the_key_is_stored_and_last_used_is_written_once_a_minute(
    web: WebContext, api: Api, api_key: str
) -> None:
    assert re.fullmatch(r"tw_[A-Za-z0-9_-]{43}", api_key)
    client = api()
    assert (await client.get("/v1/mailboxes")).status_code == 200
    async with web.runtime.sessionmaker() as session:
        key = (await session.execute(select(ApiKey))).scalar_one()
    assert api_key not in (key.key_hash, key.prefix)
    assert api_key.startswith(key.prefix)
    first_use = key.last_used_at
    assert first_use is not None
    assert (await client.get("/v1/mailboxes")).status_code == 200
    async with web.runtime.sessionmaker() as session:
        assert await session.scalar(select(ApiKey.last_used_at)) == first_use


async def test_unknown_routes_and_methods_answer_in_the_api_error_shape(api: Api) -> None:
    client = api()
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong_method = await client.put("/v1/mailboxes")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
