"""The sandbox provider over real HTTP: it must answer like Google and fail exactly as told.

Why: the end-to-end tests and the demo trust it to stand in for Google, so its shapes, its PKCE checks
and its fault switches are checked here against a real uvicorn server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from devkit.sandbox import create_sandbox_app, sandbox_state
from devkit.serving import RunningServer, serve_in_thread

CLIENT_ID = "sandbox-client.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-sandbox-secret"
REDIRECT_URI = "http://127.0.0.1:9/oauth/google/callback?from=test"
EMAIL, SUB = "ada@example.test", "104417123456789012345"
INVALID_GRANT = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread(create_sandbox_app(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)) as running:
        yield running


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        client.post("/_sandbox/reset").raise_for_status()
        yield client


def seed(http: httpx.Client, *, rotate: bool = False) -> str:
    """Add the test account and a refresh token for it; returns the token."""
    http.post("/_sandbox/accounts", json={"email": EMAIL, "sub": SUB}).raise_for_status()
    response = http.post("/_sandbox/tokens", json={"sub": SUB, "rotate": rotate})
    assert response.status_code == 201, response.text
    return response.json()["refresh_token"]


def refresh(http: httpx.Client, token: str, *, secret: str = CLIENT_SECRET, timeout: float = 5) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT_ID, "client_secret": secret}
    return http.post("/token", data=form, timeout=timeout)


def add_fault(http: httpx.Client, **fault: Any) -> None:
    response = http.post("/_sandbox/faults", json=fault)
    assert response.status_code == 201, response.text


def test_refresh_returns_a_google_shaped_access_token(http: httpx.Client) -> None:
    response = refresh(http, seed(http))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache, no-store, max-age=0, must-revalidate"
    assert response.text.startswith('{\n  "access_token": "ya29.')
    body = response.json()
    assert body["expires_in"] == 3599
    assert body["token_type"] == "Bearer"
    assert "https://mail.google.com/" in body["scope"].split()
    assert "refresh_token" not in body


def test_client_secret_basic_is_accepted(http: httpx.Client) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": seed(http)}
    response = http.post("/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert response.status_code == 200, response.text


def test_wrong_client_secret_is_invalid_client(http: httpx.Client) -> None:
    response = refresh(http, seed(http), secret="wrong")
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client", "error_description": "Unauthorized"}


def test_unknown_refresh_token_is_invalid_grant(http: httpx.Client) -> None:
    response = refresh(http, "1//never-issued")
    assert response.status_code == 400
    assert response.json() == INVALID_GRANT


def test_revoke_fault_applies_until_cleared(http: httpx.Client) -> None:
    token = seed(http)
    add_fault(http, mode="revoke", refresh_token=token)

    assert [refresh(http, token).status_code for _ in range(3)] == [400, 400, 400]
    assert refresh(http, token).json() == INVALID_GRANT
    assert http.delete("/_sandbox/faults", params={"refresh_token": token}).json() == {"cleared": 1}
    assert refresh(http, token).status_code == 200


def test_rotation_issues_a_new_token_and_kills_the_old_one(http: httpx.Client) -> None:
    old = seed(http, rotate=True)

    first = refresh(http, old)
    assert first.status_code == 200
    new = first.json()["refresh_token"]
    assert new != old

    assert refresh(http, old).json() == INVALID_GRANT
    second = refresh(http, new)
    assert second.status_code == 200
    assert second.json()["refresh_token"] not in {old, new}


def test_strict_rotation_revokes_the_whole_grant_when_an_old_token_comes_back() -> None:
    app = create_sandbox_app(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    state = sandbox_state(app)
    state.strict_rotation = True
    with serve_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=5) as http:
        old = seed(http)  # strict rotation rotates every grant, asked or not
        new = refresh(http, old).json()["refresh_token"]
        assert refresh(http, old).json() == INVALID_GRANT  # a replay: RFC 9700 §4.14.2 ends the grant
        assert refresh(http, new).json() == INVALID_GRANT
    assert list(state.revoked_by_reuse) == [SUB]


# Cases copied from shared/oauth-error-cases.json (the tests must not depend on files outside the repo).
REPLAYED_CASES = [
    {
        "status": 429,
        "headers": {"Content-Type": "application/json; charset=utf-8", "Retry-After": "30"},
        "body": '{\n  "error": "rate_limit_exceeded",\n  "error_description": "Rate Limit Exceeded"\n}',
    },
    {"status": 401, "headers": {"Content-Length": "0"}, "body": ""},
    {
        "status": 400,
        "headers": {"Content-Type": "application/json; charset=utf-8"},
        "body": '{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired"}',
    },
]


@pytest.mark.parametrize("case", REPLAYED_CASES, ids=["429-retry-after", "401-empty", "aadsts-700082"])
def test_raw_fault_replays_a_recorded_response_exactly(http: httpx.Client, case: dict[str, Any]) -> None:
    token = seed(http)
    add_fault(http, mode="raw", refresh_token=token, count=1, **case)

    response = refresh(http, token)

    assert response.status_code == case["status"]
    assert response.text == case["body"]
    for name, value in case["headers"].items():
        assert response.headers[name] == value
    assert refresh(http, token).status_code == 200


def test_count_limited_fault_stops_after_n_requests(http: httpx.Client) -> None:
    token = seed(http)
    add_fault(http, mode="http_5xx", status=502, count=2)  # provider-wide

    responses = [refresh(http, token) for _ in range(3)]

    assert [r.status_code for r in responses] == [502, 502, 200]
    assert responses[0].headers["content-type"] == "text/html; charset=UTF-8"
    assert "<title>Error 502 (Server Error)!!1</title>" in responses[0].text
    assert http.get("/_sandbox/faults").json() == {"provider": None, "tokens": {}}


def test_outage_ends_by_itself(http: httpx.Client) -> None:
    token = seed(http)
    add_fault(http, mode="outage", seconds=0.8)
    started = time.monotonic()

    assert refresh(http, token).status_code == 503
    assert refresh(http, "1//unknown").status_code == 503  # every request, whatever the token
    while (status := refresh(http, token).status_code) == 503:
        assert time.monotonic() - started < 5, "the outage did not end"
        time.sleep(0.05)

    assert status == 200
    assert time.monotonic() - started >= 0.8
    assert http.get("/_sandbox/faults").json()["provider"] is None


def test_outage_is_provider_wide_only(http: httpx.Client) -> None:
    response = http.post("/_sandbox/faults", json={"mode": "outage", "refresh_token": "1//x", "seconds": 1})
    assert response.status_code == 400
    assert http.post("/_sandbox/faults", json={"mode": "meltdown"}).status_code == 400


def test_rate_limit_sends_retry_after(http: httpx.Client) -> None:
    token = seed(http)
    add_fault(http, mode="rate_limit", refresh_token=token, retry_after=7, count=1)

    response = refresh(http, token)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"] == "rate_limit_exceeded"


@pytest.mark.parametrize("variant", ["not_json", "html", "no_access_token", "empty"])
def test_malformed_success_has_no_usable_token(http: httpx.Client, variant: str) -> None:
    token = seed(http)
    add_fault(http, mode="malformed", refresh_token=token, variant=variant)

    response = refresh(http, token)

    assert response.status_code == 200
    try:
        body = response.json()
    except json.JSONDecodeError:
        return
    assert "access_token" not in body


def test_invalid_client_fault(http: httpx.Client) -> None:
    token = seed(http)
    add_fault(http, mode="invalid_client")
    assert refresh(http, token).json() == {"error": "invalid_client", "error_description": "Unauthorized"}


def test_timeout_fault_outlasts_the_client_and_frees_the_server(http: httpx.Client) -> None:
    token = seed(http)
    add_fault(http, mode="timeout", refresh_token=token, seconds=30, count=1)

    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        refresh(http, token, timeout=0.3)

    assert refresh(http, token).status_code == 200
    assert time.monotonic() - started < 5


def test_request_counts_per_refresh_token(http: httpx.Client) -> None:
    token = seed(http)
    add_fault(http, mode="revoke", refresh_token=token, count=1)
    for _ in range(3):
        refresh(http, token)
    refresh(http, "1//other")

    counts = http.get("/_sandbox/requests").json()

    assert counts["by_refresh_token"] == {token: 3, "1//other": 1}
    assert counts["by_grant_type"] == {"refresh_token": 4}
    assert counts["total"] == 4
    http.delete("/_sandbox/requests")
    assert http.get("/_sandbox/requests").json()["total"] == 0


# ---------------------------------------------------------------------------------------------------
# Authorization code + PKCE
# ---------------------------------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(challenge: str, **overrides: str) -> dict[str, str]:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": "openid email https://mail.google.com/",
        "state": "st-" + secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
        "nonce": "n-0S6_WzA2Mj",
    }
    return params | overrides


def consent(http: httpx.Client, params: dict[str, str], **decision: str) -> dict[str, list[str]]:
    """Click a button on the consent page; returns the query the browser is sent back with."""
    response = http.post("/authorize", data=params | decision)
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI.split("?")[0]
    return parse_qs(location.query)


def exchange(http: httpx.Client, code: str, verifier: str, redirect_uri: str = REDIRECT_URI) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": redirect_uri}
    return http.post("/token", data=form | {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


def jwt_part(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jwt_payload(token: str) -> dict[str, Any]:
    header, payload, _signature = token.split(".")
    assert jwt_part(header)["alg"] == "RS256"
    return jwt_part(payload)


def test_consent_page_lists_the_accounts(http: httpx.Client) -> None:
    seed(http)
    _, challenge = pkce_pair()

    page = http.get("/authorize", params=authorize_params(challenge))

    assert page.status_code == 200
    assert EMAIL in page.text
    assert SUB in page.text
    assert 'name="deny"' in page.text


def test_authorization_code_flow_with_pkce(http: httpx.Client) -> None:
    seed(http)
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge)

    query = consent(http, params, account=SUB)
    assert query["state"] == [params["state"]]
    assert query["from"] == ["test"]  # the redirect_uri's own query survives
    response = exchange(http, query["code"][0], verifier)

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["access_token", "expires_in", "refresh_token", "scope", "token_type", "id_token"]
    claims = jwt_payload(body["id_token"])
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["aud"] == CLIENT_ID
    assert (claims["sub"], claims["email"], claims["email_verified"]) == (SUB, EMAIL, True)
    assert claims["nonce"] == params["nonce"]
    assert claims["exp"] > claims["iat"]
    assert refresh(http, body["refresh_token"]).status_code == 200
    assert exchange(http, query["code"][0], verifier).json()["error"] == "invalid_grant"  # single use


def test_wrong_code_verifier_is_rejected_and_burns_the_code(http: httpx.Client) -> None:
    seed(http)
    verifier, challenge = pkce_pair()
    code = consent(http, authorize_params(challenge), account=SUB)["code"][0]

    wrong = exchange(http, code, pkce_pair()[0])

    assert wrong.status_code == 400
    assert wrong.json() == {"error": "invalid_grant", "error_description": "Invalid code verifier."}
    assert exchange(http, code, verifier).json()["error"] == "invalid_grant"


def test_redirect_uri_must_match_at_exchange(http: httpx.Client) -> None:
    seed(http)
    verifier, challenge = pkce_pair()
    code = consent(http, authorize_params(challenge), account=SUB)["code"][0]

    response = exchange(http, code, verifier, redirect_uri="http://127.0.0.1:9/elsewhere")

    assert response.json()["error"] == "redirect_uri_mismatch"


def test_deny_redirects_with_access_denied(http: httpx.Client) -> None:
    seed(http)
    params = authorize_params(pkce_pair()[1])

    query = consent(http, params, deny="1")

    assert query == {"from": ["test"], "error": ["access_denied"], "state": [params["state"]]}


@pytest.mark.parametrize(
    ("override", "status", "error"),
    [
        ({"client_id": "someone-else"}, 401, "invalid_client"),
        ({"redirect_uri": "javascript:alert(1)"}, 400, "redirect_uri_mismatch"),
        ({"response_type": "token"}, 400, "unsupported_response_type"),
        ({"code_challenge_method": "plain"}, 400, "invalid_request"),
        ({"state": ""}, 400, "invalid_request"),
    ],
)
def test_bad_authorization_requests_get_an_error_page(
    http: httpx.Client, override: dict[str, str], status: int, error: str
) -> None:
    page = http.get("/authorize", params=authorize_params(pkce_pair()[1], **override))
    assert page.status_code == status
    assert f'data-error="{error}"' in page.text


async def test_serve_in_thread_works_inside_a_running_loop() -> None:
    server = serve_in_thread(create_sandbox_app(client_id=CLIENT_ID, client_secret=CLIENT_SECRET))
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.post("/_sandbox/accounts", json={"email": EMAIL})
        assert response.status_code == 201
        assert response.json()["sub"].isdigit()
    finally:
        await asyncio.to_thread(server.stop)
    assert not server.thread.is_alive()
