"""The sandbox Microsoft over real HTTP: Microsoft's paths, error bodies, rotation, id_tokens and faults.

Every fault answer goes through the real classifier with Microsoft's rules, so a fault means to the service what
the same answer from Microsoft would.
"""

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from devkit.sandbox import (
    MICROSOFT,
    create_sandbox_app,
    create_sandboxes,
    pkce_challenge,
    sandbox_state,
    sandboxes_environment,
)
from devkit.serving import RunningServer, serve_in_thread
from statemachine.core.classify import classify_response
from statemachine.core.states import FailureKind
from statemachine.providers import microsoft
from statemachine.services.settings import load_settings

CLIENT_ID, CLIENT_SECRET = "6731de76-14a6-49ae-97bc-6eba6914391e", "ms-sandbox-secret"
TOKEN, AUTHORIZE = "/common/oauth2/v2.0/token", "/common/oauth2/v2.0/authorize"
TID, OID = "72f988bf-86f1-41af-91ab-2d7cd011db47", "00000000-0000-0000-66f3-3332eca7ea81"
DESCRIPTION = re.compile(r"AADSTS(\d+): .+ Trace ID: [0-9a-f-]{36} Correlation ID: [0-9a-f-]{36} Timestamp: \S+ \S+Z")


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    app = create_sandbox_app(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, dialect=MICROSOFT)
    with serve_in_thread(app) as running:
        yield running


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        client.post("/_sandbox/reset").raise_for_status()
        client.post("/_sandbox/accounts", json={"email": "ana@contoso.test", "sub": OID, "tid": TID}).raise_for_status()
        yield client


def seed(http: httpx.Client) -> str:
    return str(http.post("/_sandbox/tokens", json={"sub": OID}).json()["refresh_token"])


def refresh(http: httpx.Client, token: str, secret: str = CLIENT_SECRET) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT_ID, "client_secret": secret}
    return http.post(TOKEN, data=form)


def claims(id_token: str) -> dict[str, Any]:
    payload = id_token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_every_refresh_returns_a_new_refresh_token_and_the_old_one_stays_valid(http: httpx.Client) -> None:
    first = seed(http)
    tokens = [first]
    for _ in range(3):
        answer = refresh(http, tokens[-1]).json()
        tokens.append(answer["refresh_token"])
    assert len(set(tokens)) == 4
    assert all(token.startswith("0.A") for token in tokens)
    assert refresh(http, first).status_code == 200  # Microsoft does not revoke a used refresh token


def test_strict_rotation_retires_microsofts_old_tokens_and_a_reused_one_ends_the_grant() -> None:
    """Strict rotation is a state option every dialect honours: Microsoft's old token stops working too."""
    app = create_sandbox_app(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, dialect=MICROSOFT)
    state = sandbox_state(app)
    state.strict_rotation = True
    with serve_in_thread(app) as running, httpx.Client(base_url=running.url, timeout=5) as client:
        client.post("/_sandbox/accounts", json={"email": "ana@contoso.test", "sub": OID, "tid": TID}).raise_for_status()
        old = seed(client)
        new = refresh(client, old).json()["refresh_token"]
        assert refresh(client, old).json()["error"] == "invalid_grant"  # a replay ends the whole grant
        assert refresh(client, new).json()["error"] == "invalid_grant"
    assert list(state.revoked_by_reuse) == [OID]


def test_the_id_token_names_the_account_by_tenant_and_object_id(http: httpx.Client) -> None:
    token = claims(refresh(http, seed(http)).json()["id_token"])
    assert (token["tid"], token["oid"], token["aud"]) == (TID, OID, CLIENT_ID)
    assert token["iss"] == f"https://login.microsoftonline.com/{TID}/v2.0"
    assert token["sub"] != OID  # pairwise, per app


def test_an_unknown_refresh_token_gets_a_microsoft_shaped_error(http: httpx.Client) -> None:
    response = refresh(http, "0.AX-never-issued")
    body = response.json()
    assert response.status_code == 400
    assert (body["error"], body["error_codes"], body["suberror"]) == ("invalid_grant", [70000], "bad_token")
    assert DESCRIPTION.fullmatch(body["error_description"])
    assert response.headers["x-ms-request-id"] == body["trace_id"]
    assert {"timestamp", "correlation_id", "error_uri"} <= set(body)


@pytest.mark.parametrize(
    ("fault", "status", "code", "kind", "admin"),
    [
        ({"mode": "revoke"}, 400, 50173, FailureKind.PERMANENT, False),
        ({"mode": "mfa_required"}, 400, 50076, FailureKind.PERMANENT, False),
        ({"mode": "conditional_access"}, 400, 53003, FailureKind.PERMANENT, True),
        ({"mode": "invalid_client"}, 401, 7000222, FailureKind.CONFIG, False),  # an expired client secret
        ({"mode": "rate_limit", "retry_after": 42}, 429, 90055, FailureKind.TRANSIENT, False),
        ({"mode": "outage", "seconds": 30}, 503, 90033, FailureKind.TRANSIENT, False),
        ({"mode": "http_5xx", "status": 500}, 500, 50000, FailureKind.TRANSIENT, False),
    ],
    ids=lambda value: value["mode"] if isinstance(value, dict) else None,
)
def test_each_fault_answers_like_microsoft_and_classifies_as_microsofts_would(
    http: httpx.Client, fault: dict[str, Any], status: int, code: int, kind: FailureKind, admin: bool
) -> None:
    token = seed(http)
    assert http.post("/_sandbox/faults", json={**fault, "count": 1}).status_code == 201
    response = refresh(http, token)
    body = response.json()
    assert (response.status_code, body["error_codes"]) == (status, [code])
    assert DESCRIPTION.fullmatch(body["error_description"])
    verdict = classify_response(
        microsoft.CLASSIFICATION, status, response.headers, response.content, now=datetime.now(UTC)
    )
    assert verdict is not None
    assert (verdict.kind, verdict.admin) == (kind, admin)
    if fault["mode"] == "rate_limit":
        assert verdict.retry_after == 42


def test_consent_at_the_tenant_path_returns_a_code_that_redeems_for_tid_and_oid(http: httpx.Client) -> None:
    verifier = "v" * 50
    params = {
        "client_id": CLIENT_ID, "redirect_uri": "http://127.0.0.1:9/auth/microsoft/callback", "response_type": "code",
        "scope": "openid profile offline_access", "state": "s1", "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256", "response_mode": "query", "prompt": "select_account",
    }  # fmt: skip
    page = http.get(AUTHORIZE, params=params)
    assert page.status_code == 200
    assert "Sandbox Microsoft" in page.text
    assert f"tenant {TID}" in page.text
    decision = http.post(AUTHORIZE, data=params | {"account": OID})
    assert decision.status_code == 302
    query = parse_qs(urlsplit(decision.headers["location"]).query)
    form = {"grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": params["redirect_uri"],
            "code_verifier": verifier, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}  # fmt: skip
    answer = http.post(TOKEN, data=form).json()
    assert (claims(answer["id_token"])["tid"], claims(answer["id_token"])["oid"]) == (TID, OID)
    assert answer["refresh_token"].startswith("0.A")


def test_a_fault_set_on_an_old_token_hits_the_grant_it_rotated_into(http: httpx.Client) -> None:
    """Callers that know only the token a mailbox started with (the simulator) can still break it."""
    first = seed(http)
    newest = refresh(http, refresh(http, first).json()["refresh_token"]).json()["refresh_token"]
    assert http.post("/_sandbox/faults", json={"mode": "revoke", "refresh_token": first}).status_code == 201
    assert refresh(http, newest).json()["error_codes"] == [50173]
    assert list(http.get("/_sandbox/faults").json()["tokens"]) == [newest]


def test_one_server_serves_both_providers_at_the_urls_the_settings_get() -> None:
    with serve_in_thread(create_sandboxes(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)) as running:
        env = sandboxes_environment(running.url, CLIENT_ID, CLIENT_SECRET)
        assert load_settings(env).providers["microsoft"].token_url == env["MICROSOFT_TOKEN_URL"]
        with httpx.Client(base_url=running.url, timeout=5) as client:
            form = {"grant_type": "refresh_token", "refresh_token": "x", "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET}  # fmt: skip
            assert client.post(env["MICROSOFT_TOKEN_URL"], data=form).json()["error_codes"] == [70000]
            assert client.post(env["GOOGLE_TOKEN_URL"], data=form).json()["error"] == "invalid_grant"
            assert client.post("/microsoft/_sandbox/accounts", json={"email": "a@contoso.test"}).json()["tid"]
