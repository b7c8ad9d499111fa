"""OAuthProvider through respx (mocking at the httpx layer, above the aiohttp transport) and a few real sockets."""

import asyncio
import base64
import dataclasses
import gzip
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from httpx_aiohttp import AiohttpTransport

from statemachine.core.classify import GENERIC_RULES
from statemachine.core.errors import OAuthConfigError, OAuthError, OAuthPermanentError, OAuthTransientError
from statemachine.providers import google, microsoft
from statemachine.providers.oauth import OAuthProvider, RetryPolicy, TokenGrant, make_http_client, new_pkce_pair
from statemachine.providers.spec import ProviderSpec
from tests.smtp import self_signed_tls

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[4] / "shared" / "oauth-error-cases.json").read_text()
)
TOKEN_URL = "https://oauth2.example.test/token"
AUTH_URL = "https://accounts.example.test/o/oauth2/v2/auth"
CLIENT_ID = "client-123.apps.example.test"
ISSUER = "https://accounts.google.com"
CLIENT_SECRET = "CLIENT-SECRET-shh"
REFRESH_TOKEN = "1//SECRET-RT"
ACCESS_TOKEN = "ya29.SECRET-AT"
SECRETS = (CLIENT_SECRET, REFRESH_TOKEN, ACCESS_TOKEN, "SECRET")
ERROR_CLASS = {"transient": OAuthTransientError, "permanent": OAuthPermanentError, "config": OAuthConfigError}
TRANSPORT_EXCEPTION = {
    "connect_timeout": httpx.ConnectTimeout,
    "connect_error": httpx.ConnectError,
    "remote_protocol_error": httpx.RemoteProtocolError,
}
OK = {"access_token": ACCESS_TOKEN, "expires_in": 3599, "scope": "https://mail.example/", "token_type": "Bearer"}


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record backoff's waits instead of sleeping (backoff sleeps via the global asyncio: patched test-wide)."""
    waits: list[float] = []

    async def fake_sleep(seconds: float, *args: Any, **kwargs: Any) -> None:
        waits.append(seconds)

    monkeypatch.setattr("backoff._async.asyncio.sleep", fake_sleep)
    return waits


def spec_for(name: str) -> ProviderSpec:
    """The spec a shared case's provider is classified with; "generic" rows need only the generic rules."""
    specs = {"google": google.SPEC, "microsoft": microsoft.SPEC}
    return specs.get(name) or dataclasses.replace(google.SPEC, name=name, classification=GENERIC_RULES)


def make_provider(
    client: httpx.AsyncClient, name: str = "google", max_body_bytes: int = 65536, **retry: Any
) -> OAuthProvider:
    policy = RetryPolicy(**{"tries": 3, "base_seconds": 0.0, **retry})
    return OAuthProvider(
        client,
        spec=spec_for(name),
        max_body_bytes=max_body_bytes,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_url=TOKEN_URL,
        auth_url=AUTH_URL,
        retry=policy,
    )


def id_token(**claims: Any) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
async def test_shared_case_through_refresh(
    case: dict[str, Any], http_client: httpx.AsyncClient, endpoint: respx.MockRouter, sleeps: list[float]
) -> None:
    if case.get("transport"):
        route = endpoint.post(TOKEN_URL).mock(side_effect=TRANSPORT_EXCEPTION[case["transport"]])
    else:
        route = endpoint.post(TOKEN_URL).respond(case["status"], headers=case["headers"], content=case["body"].encode())
    retry_after = case["retry_after_seconds"]
    with pytest.raises(ERROR_CLASS[case["expected"]]) as caught:
        await make_provider(http_client, name=case["provider"]).refresh(REFRESH_TOKEN)
    retried = case["expected"] == "transient" and (retry_after or 0) <= RetryPolicy().max_seconds
    assert route.call_count == (3 if retried else 1)
    assert caught.value.verdict.retry_after == retry_after
    assert sleeps == ([retry_after or 0.0] * 2 if retried else [])


async def test_unmocked_request_raises_instead_of_reaching_the_network(http_client: httpx.AsyncClient) -> None:
    unmocked = respx.mock(using="httpx", assert_all_mocked=True, assert_all_called=False)
    with unmocked, pytest.raises(AssertionError, match="not mocked"):  # not a TransportError: not retried
        await make_provider(http_client).refresh(REFRESH_TOKEN)


async def test_respx_default_mocker_does_not_intercept_the_aiohttp_transport(http_client: httpx.AsyncClient) -> None:
    async def teapot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(teapot, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/token"
    async with server:
        with respx.mock(assert_all_called=False) as router:  # default using="httpcore"
            router.post(url).respond(200, json=OK)
            response = await http_client.post(url)
    assert response.status_code == 418  # the real server answered, not the mock


async def test_timeouts_are_retried_three_times(http_client: httpx.AsyncClient, endpoint: respx.MockRouter) -> None:
    route = endpoint.post(TOKEN_URL).mock(side_effect=[httpx.ConnectTimeout, httpx.ReadTimeout, httpx.ReadTimeout])
    with pytest.raises(OAuthTransientError) as caught:
        await make_provider(http_client).refresh(REFRESH_TOKEN)
    assert route.call_count == 3
    assert caught.value.error_code == "read_timeout"


async def test_invalid_grant_is_tried_once(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter, sleeps: list[float]
) -> None:
    route = endpoint.post(TOKEN_URL).respond(400, json={"error": "invalid_grant"})
    with pytest.raises(OAuthPermanentError):
        await make_provider(http_client).refresh(REFRESH_TOKEN)
    assert (route.call_count, sleeps) == (1, [])


async def test_success_after_two_503s_returns_the_grant(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "statemachine.providers.oauth.random.uniform", lambda low, high: high
    )  # top of each jitter range
    route = endpoint.post(TOKEN_URL).mock(
        side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200, json=OK)]
    )
    grant = await make_provider(http_client, base_seconds=2.0, max_seconds=3.0).refresh(REFRESH_TOKEN)
    assert (grant.access_token, grant.expires_in, grant.scope) == (ACCESS_TOKEN, 3599, OK["scope"])
    assert route.call_count == 3
    assert sleeps == [2.0, 3.0]  # 2 * 2**n, capped at max_seconds
    sent = parse_qs(route.calls.last.request.content.decode())
    assert sent == {
        "grant_type": ["refresh_token"],
        "refresh_token": [REFRESH_TOKEN],
        "client_id": [CLIENT_ID],
        "client_secret": [CLIENT_SECRET],
    }


async def test_jitter_stays_below_the_exponential_ceiling(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter, sleeps: list[float]
) -> None:
    endpoint.post(TOKEN_URL).respond(500)
    with pytest.raises(OAuthTransientError):
        await make_provider(http_client, tries=5, base_seconds=1.0, max_seconds=3.0).refresh(REFRESH_TOKEN)
    assert len(sleeps) == 4
    assert all(0.0 <= wait <= ceiling for wait, ceiling in zip(sleeps, [1.0, 2.0, 3.0, 3.0], strict=True))


@pytest.mark.parametrize("retry_after", ["7", "Sat, 28 Nov 2026 14:00:07 GMT"])
async def test_retry_after_is_honoured_exactly(
    retry_after: str, http_client: httpx.AsyncClient, endpoint: respx.MockRouter, sleeps: list[float]
) -> None:
    throttled = httpx.Response(429, headers={"Retry-After": retry_after, "Date": "Sat, 28 Nov 2026 14:00:00 GMT"})
    route = endpoint.post(TOKEN_URL).mock(side_effect=[throttled, httpx.Response(200, json=OK)])
    await make_provider(http_client, base_seconds=30.0).refresh(REFRESH_TOKEN)
    assert (route.call_count, sleeps) == (2, [7.0])


async def test_retry_after_longer_than_max_seconds_gives_up_at_once(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter, sleeps: list[float]
) -> None:
    route = endpoint.post(TOKEN_URL).respond(503, headers={"Retry-After": "61"})
    with pytest.raises(OAuthTransientError) as caught:
        await make_provider(http_client, max_seconds=60.0).refresh(REFRESH_TOKEN)
    assert (route.call_count, sleeps, caught.value.verdict.retry_after) == (1, [], 61.0)


async def test_retry_policy_is_read_on_every_call(http_client: httpx.AsyncClient, endpoint: respx.MockRouter) -> None:
    route = endpoint.post(TOKEN_URL).respond(502)
    provider = make_provider(http_client, tries=2)
    with pytest.raises(OAuthTransientError):
        await provider.refresh(REFRESH_TOKEN)
    provider.retry = RetryPolicy(tries=4, base_seconds=0.0)
    with pytest.raises(OAuthTransientError):
        await provider.refresh(REFRESH_TOKEN)
    assert route.call_count == 6


@pytest.mark.parametrize(
    ("body", "refresh_token", "expires_in"),
    [
        ({**OK, "refresh_token": "1//ROTATED"}, "1//ROTATED", 3599),
        (OK, None, 3599),
        ({**OK, "refresh_token": "", "expires_in": "3600"}, None, 3600),
        ({**OK, "refresh_token": None, "expires_in": True}, None, None),
    ],
    ids=["rotated", "missing", "empty-and-string-expiry", "null-and-bool-expiry"],
)
async def test_refresh_token_in_the_grant(
    body: dict[str, Any],
    refresh_token: str | None,
    expires_in: int | None,
    http_client: httpx.AsyncClient,
    endpoint: respx.MockRouter,
) -> None:
    endpoint.post(TOKEN_URL).respond(200, json=body)
    grant = await make_provider(http_client).refresh(REFRESH_TOKEN)
    assert (grant.refresh_token, grant.expires_in, grant.subject) == (refresh_token, expires_in, None)


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(200, content=b"x" * 1025), "oversized_response"),
        (httpx.Response(200, headers={"Content-Length": "99999999999999999999"}), "oversized_response"),
        (httpx.Response(200, json={"token_type": "Bearer"}), "missing_access_token"),
        (httpx.Response(200, content=b'{"access_token": "ya29.trunc'), "non_json_body"),
        (httpx.Response(200, content=b"<html>captive portal</html>"), "non_json_body"),
    ],
    ids=["too-big", "declared-too-big", "no-token", "truncated-json", "html"],
)
async def test_unusable_200_is_transient(
    response: httpx.Response, code: str, http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    route = endpoint.post(TOKEN_URL).mock(return_value=response)
    with pytest.raises(OAuthTransientError) as caught:
        await make_provider(http_client, max_body_bytes=1024).refresh(REFRESH_TOKEN)
    assert (caught.value.error_code, route.call_count) == (code, 3)


async def test_streamed_body_is_cut_off_at_the_limit(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    produced: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1000):
            produced.append(1)
            yield b"x" * 512

    endpoint.post(TOKEN_URL).mock(side_effect=lambda request: httpx.Response(200, content=endless()))
    with pytest.raises(OAuthTransientError, match="oversized_response"):
        await make_provider(http_client, tries=1, max_body_bytes=1024).refresh(REFRESH_TOKEN)
    assert len(produced) == 3  # stopped right after crossing 1024 bytes


@pytest.mark.parametrize(
    ("exception", "code"),
    [
        (httpx.WriteTimeout, "write_timeout"),
        (httpx.PoolTimeout, "pool_timeout"),
        (httpx.ReadError, "read_error"),
        (httpx.WriteError, "write_error"),
        (httpx.LocalProtocolError, "remote_protocol_error"),
        (httpx.ProxyError, "network_error"),
        (httpx.UnsupportedProtocol, "network_error"),
    ],
)
async def test_httpx_exceptions_map_to_transport_kinds(
    exception: type[Exception], code: str, http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    route = endpoint.post(TOKEN_URL).mock(side_effect=exception)
    with pytest.raises(OAuthTransientError) as caught:
        await make_provider(http_client).refresh(REFRESH_TOKEN)
    assert (caught.value.error_code, route.call_count) == (code, 3)
    assert caught.value.__cause__ is None  # the httpx exception holds the request, and with it our secrets
    assert caught.value.__context__ is None


async def test_redirect_is_not_followed(http_client: httpx.AsyncClient, endpoint: respx.MockRouter) -> None:
    route = endpoint.post(TOKEN_URL).respond(302, headers={"Location": "https://ipv4.example.test/sorry"})
    with pytest.raises(OAuthTransientError, match="http_302"):
        await make_provider(http_client).refresh(REFRESH_TOKEN)
    assert route.call_count == endpoint.calls.call_count == 3


async def test_a_small_declared_body_that_inflates_past_the_limit_is_oversized(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    bomb = gzip.compress(json.dumps({**OK, "padding": "x" * 100_000}).encode())  # about 400 bytes on the wire
    endpoint.post(TOKEN_URL).respond(200, content=bomb, headers={"Content-Encoding": "gzip"})
    with pytest.raises(OAuthTransientError, match="oversized_response"):
        await make_provider(http_client, tries=1, max_body_bytes=1024).refresh(REFRESH_TOKEN)


async def test_a_cookie_one_answer_sets_never_rides_along_a_later_request(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    # one client serves every user's refresh: a provider's cookie from one user's answer must reach nobody else
    refresh = endpoint.post(TOKEN_URL).respond(200, json=OK, headers={"Set-Cookie": "NID=user-a; Path=/"})
    revoke = endpoint.post("https://oauth2.example.test/revoke").respond(200)
    provider = make_provider(http_client)
    provider.revoke_url = "https://oauth2.example.test/revoke"
    await provider.refresh(REFRESH_TOKEN)
    await provider.refresh(REFRESH_TOKEN)
    assert await provider.revoke(REFRESH_TOKEN)
    sent = [call.request.headers.get("cookie") for call in [*refresh.calls, *revoke.calls]]
    assert sent == [None, None, None]


def test_make_http_client_uses_the_aiohttp_transport() -> None:
    client = make_http_client(7.5)
    assert isinstance(client._transport, AiohttpTransport)
    assert client.timeout == httpx.Timeout(7.5)
    assert client.follow_redirects is False


def test_authorization_url_asks_for_pkce_offline_access_and_consent(http_client: httpx.AsyncClient) -> None:
    url = make_provider(http_client).authorization_url(
        redirect_uri="https://app.example.test/oauth/callback",
        state="st&te",
        code_challenge="challenge",
        scopes=["openid", "email", "https://mail.google.com/"],
        login_hint="ana@example.com",
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == AUTH_URL
    assert {key: values[0] for key, values in parse_qs(parts.query).items()} == {
        "client_id": CLIENT_ID,
        "redirect_uri": "https://app.example.test/oauth/callback",
        "response_type": "code",
        "scope": "openid email https://mail.google.com/",
        "state": "st&te",
        "code_challenge": "challenge",
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "login_hint": "ana@example.com",
    }
    assert CLIENT_SECRET not in url
    with pytest.raises(TypeError):
        make_provider(http_client).authorization_url(redirect_uri="r", state="s", code_challenge="c", scopes="openid")


def test_new_pkce_pair() -> None:
    verifier, challenge = new_pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert challenge == base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert new_pkce_pair()[0] != verifier


async def test_exchange_code_reads_the_id_token_claims(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    claims = {
        "sub": "1234",
        "email": "ana@example.com",
        "email_verified": True,
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "exp": time.time() + 600,
    }
    body = {**OK, "refresh_token": REFRESH_TOKEN, "id_token": id_token(**claims)}
    route = endpoint.post(TOKEN_URL).respond(200, json=body)
    grant = await make_provider(http_client).exchange_code(
        code="4/SECRET-CODE", redirect_uri="https://r.test/cb", code_verifier="v" * 43
    )
    assert (grant.subject, grant.email, grant.email_verified, grant.refresh_token) == (
        "1234",
        "ana@example.com",
        True,
        REFRESH_TOKEN,
    )
    sent = parse_qs(route.calls.last.request.content.decode())
    assert sent["grant_type"] == ["authorization_code"]
    assert (sent["code"], sent["code_verifier"], sent["client_secret"]) == (
        ["4/SECRET-CODE"],
        ["v" * 43],
        [CLIENT_SECRET],
    )


@pytest.mark.parametrize(
    "token",
    [
        id_token(sub="1", aud="someone-else", exp=time.time() + 600),
        id_token(sub="1", aud=["someone-else"], exp=time.time() + 600),
        id_token(sub="1", aud=CLIENT_ID, exp=time.time() - 1),
        id_token(sub="1", aud=CLIENT_ID),
        id_token(sub="1", iss="https://evil.test", aud=CLIENT_ID, exp=time.time() + 600),
        id_token(sub="1", aud=CLIENT_ID, exp=time.time() + 600),
        id_token(sub="1", iss=ISSUER, aud=["other", CLIENT_ID], exp=time.time() + 600),
        id_token(sub="1", iss=ISSUER, aud=["other", CLIENT_ID], azp="other", exp=time.time() + 600),
        id_token(sub="1", iss=ISSUER, aud=CLIENT_ID, azp="other", exp=time.time() + 600),
        "not-a-jwt",
        "a.%%%.c",
        "a.bnVsbA.c",  # payload "null"
    ],
    ids=[
        "wrong-aud",
        "wrong-aud-list",
        "expired",
        "no-exp",
        "wrong-iss",
        "no-iss",
        "aud-list-without-azp",
        "aud-list-other-azp",
        "other-azp",
        "not-a-jwt",
        "bad-base64",
        "not-an-object",
    ],
)
async def test_exchange_code_rejects_a_bad_id_token(
    token: str, http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    endpoint.post(TOKEN_URL).respond(200, json={**OK, "id_token": token})
    with pytest.raises(OAuthConfigError, match="invalid_id_token"):
        await make_provider(http_client).exchange_code(code="c", redirect_uri="r", code_verifier="v")


@pytest.mark.parametrize(
    ("scope", "kept"),
    [("openid https://mail.google.com/", True), ("a\x00b", False), ("x" * 5000, False), ('a"b', False),
     ("a  b", False), (42, False), ("", False)],
    ids=["rfc-6749", "nul", "huge", "quote", "double-space", "number", "empty"],
)  # fmt: skip
async def test_a_scope_outside_rfc_6749_syntax_counts_as_none_named(
    scope: object, kept: bool, http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    endpoint.post(TOKEN_URL).respond(200, json={**OK, "scope": scope})
    grant = await make_provider(http_client).refresh(REFRESH_TOKEN)
    assert grant.scope == (scope if kept else None)
    assert grant.access_token == ACCESS_TOKEN  # the refresh itself succeeds


async def test_an_id_token_subject_with_a_nul_names_no_account(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    token = id_token(sub="9\x00", iss="accounts.google.com", aud=CLIENT_ID, exp=time.time() + 60)
    endpoint.post(TOKEN_URL).respond(200, json={**OK, "id_token": token})
    grant = await make_provider(http_client).exchange_code(code="c", redirect_uri="r", code_verifier="v")
    assert (grant.subject, grant.access_token) == (None, ACCESS_TOKEN)


async def test_a_refresh_reads_the_id_token_only_while_the_mailboxs_account_is_unknown(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    good = id_token(sub="9", iss="accounts.google.com", aud=CLIENT_ID, exp=time.time() + 60)
    bad = id_token(sub="9", iss="accounts.google.com", aud="another-app", exp=time.time() + 60)
    endpoint.post(TOKEN_URL).mock(
        side_effect=[httpx.Response(200, json={**OK, "id_token": token}) for token in (good, good, bad, bad)]
    )
    provider = make_provider(http_client)
    with caplog.at_level(logging.WARNING):
        assert (await provider.refresh(REFRESH_TOKEN)).subject == "9"  # a CLI-added mailbox learns its account
        assert (await provider.refresh(REFRESH_TOKEN, account_known=True)).subject is None  # not read: kept as is
        assert (await provider.refresh(REFRESH_TOKEN)).access_token == ACCESS_TOKEN  # ignored, with a warning
        assert (await provider.refresh(REFRESH_TOKEN, account_known=True)).access_token == ACCESS_TOKEN  # unread
    assert [record.message for record in caplog.records] == [
        "ignoring an id_token from google that failed validation in a refresh answer"
    ]


async def test_exchange_code_accepts_an_audience_list_and_no_id_token(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    token = id_token(
        sub="9", iss="accounts.google.com", aud=["other", CLIENT_ID], azp=CLIENT_ID, exp=time.time() + 60,
        email_verified="true",
    )  # fmt: skip
    endpoint.post(TOKEN_URL).mock(
        side_effect=[httpx.Response(200, json={**OK, "id_token": token}), httpx.Response(200, json=OK)]
    )
    provider = make_provider(http_client)
    first = await provider.exchange_code(code="c", redirect_uri="r", code_verifier="v")
    second = await provider.exchange_code(code="c", redirect_uri="r", code_verifier="v")
    assert (first.subject, first.email, first.email_verified) == ("9", None, True)
    assert (second.subject, second.email_verified) == (None, None)


@pytest.mark.parametrize(
    ("side_effect", "error", "calls"),
    [
        ([httpx.Response(503)] * 3, OAuthTransientError, 1),  # a response came back: the code may be spent
        ([httpx.Response(200, content=b"x" * 70_000)], OAuthTransientError, 1),
        ([httpx.Response(400, json={"error": "invalid_grant"})], OAuthPermanentError, 1),
        ([httpx.ConnectError, httpx.PoolTimeout, httpx.ConnectTimeout], OAuthTransientError, 3),
        ([httpx.ReadTimeout], OAuthTransientError, 1),  # the code may have arrived: never resent
        ([httpx.ConnectError, httpx.RemoteProtocolError], OAuthTransientError, 2),
        ([httpx.WriteError], OAuthTransientError, 1),
    ],
    ids=["503", "oversized", "invalid-grant", "never-sent", "read-timeout", "connect-then-reset", "write-error"],
)
async def test_exchange_code_retries_only_when_no_response_arrived(
    side_effect: list[Any], error: type[OAuthError], calls: int, http_client: httpx.AsyncClient
) -> None:
    with respx.mock(using="httpx", assert_all_called=True) as router:
        route = router.post(TOKEN_URL).mock(side_effect=side_effect)
        with pytest.raises(error):
            await make_provider(http_client).exchange_code(code="c", redirect_uri="r", code_verifier="v")
    assert route.call_count == calls


async def test_no_secret_in_errors_reprs_or_logs(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"error": "invalid_grant", "error_description": f"refresh token {REFRESH_TOKEN} for {CLIENT_SECRET} revoked"}
    endpoint.post(TOKEN_URL).mock(
        side_effect=[
            httpx.ConnectError(f"boom {REFRESH_TOKEN}"),
            httpx.Response(503, json={"error": "temporarily_unavailable", "error_description": REFRESH_TOKEN}),
            httpx.Response(200, json={**OK, "refresh_token": REFRESH_TOKEN}),
            httpx.Response(400, json=echo),
        ]
    )
    provider = make_provider(http_client)
    grant = await provider.refresh(REFRESH_TOKEN)
    with pytest.raises(OAuthPermanentError) as caught:
        await provider.refresh(REFRESH_TOKEN)
    texts = [
        repr(grant),
        str(grant),
        str(caught.value),
        repr(caught.value),
        repr(caught.value.verdict),
        repr(provider),
        caplog.text,
    ]
    assert not [text for text in texts if any(secret in text for secret in SECRETS)]
    retries = [
        r.getMessage() for r in caplog.records if r.name == "statemachine.providers.oauth" and r.levelname == "INFO"
    ]
    assert retries == [
        "token request failed with connect_error; retrying in 0.0 s",
        "token request failed with temporarily_unavailable; retrying in 0.0 s",
    ]


async def test_token_grant_repr_hides_tokens() -> None:
    grant = TokenGrant(access_token=ACCESS_TOKEN, refresh_token=REFRESH_TOKEN, expires_in=5, email="ana@example.com")
    assert "SECRET" not in repr(grant)
    assert "expires_in=5" in repr(grant)


SILENT = b"<never answers>"


def _chunked(body: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"


def _gzipped(body: bytes) -> bytes:
    packed = gzip.compress(body)
    return b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(packed), packed)


def _answer(raw: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        if raw == SILENT:
            await reader.read()  # until the client gives up and hangs up
        else:
            writer.write(raw)
            await writer.drain()
        writer.close()

    return handle


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "connect_error"),  # refused: httpx-aiohttp calls it ConnectTimeout
        (b"", "remote_protocol_error"),  # hang-up: httpx-aiohttp calls it ConnectTimeout too
        (SILENT, "read_timeout"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "remote_protocol_error"),  # aiohttp's own ClientResponseError leaks out
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", "read_error"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\n\r\nabcde", "remote_protocol_error"),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\n{"access_token": "at"}', None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b" " * 2000, "oversized_response"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(b'{"access_token": "at"}'), None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(b" " * 2000), "oversized_response"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b" " * 2000, "oversized_response"),
        (_gzipped(b'{"access_token": "at"}'), None),
        (_gzipped(b" " * 2000), "oversized_response"),  # a few bytes on the wire, inflating past the limit
        (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}", "remote_protocol_error"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "remote_protocol_error"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}", "remote_protocol_error"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n{}", "remote_protocol_error"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\xff\xfe", "non_json_body"),
    ],
    ids=[
        "refused",
        "hang-up",
        "silent",
        "bad-status-line",
        "truncated",
        "bad-gzip",
        "ok",
        "declared-too-big",
        "chunked",
        "chunked-too-big",
        "until-close-too-big",
        "gzip",
        "gzip-inflates-too-big",
        "length-not-a-number",
        "two-lengths",
        "negative-length",
        "length-past-int64",
        "not-utf-8",
    ],
)
async def test_real_sockets_through_the_aiohttp_transport(raw: bytes | None, code: str | None) -> None:
    """The production path: the token POST straight on the aiohttp session, its answer read within the limit."""
    server = await asyncio.start_server(_answer(raw or b""), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/token"
    if raw is None:
        server.close()  # nobody listens any more
        await server.wait_closed()
    client = make_http_client(0.5)
    provider = OAuthProvider(
        client, spec=google.SPEC, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, token_url=url, auth_url=AUTH_URL,
        retry=RetryPolicy(1), max_body_bytes=1024,
    )  # fmt: skip
    try:
        if code is None:
            assert (await provider.refresh(REFRESH_TOKEN)).access_token == "at"
        else:
            with pytest.raises(OAuthTransientError) as caught:
                await provider.refresh(REFRESH_TOKEN)
            assert caught.value.error_code == code
    finally:
        server.close()
        await client.aclose()


@pytest.mark.parametrize("answer", [httpx.Response(200), httpx.Response(503), httpx.ConnectError("refused")])
async def test_revoke_is_best_effort_and_logs_no_token(
    answer: Any, http_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    revoke_url = "https://oauth2.test/revoke"
    provider = OAuthProvider(
        http_client, spec=google.SPEC, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, token_url=TOKEN_URL,
        auth_url=AUTH_URL, revoke_url=revoke_url,
    )  # fmt: skip
    with respx.mock(using="httpx", assert_all_called=True) as router:
        route = router.post(revoke_url).mock(side_effect=[answer])
        assert await provider.revoke(REFRESH_TOKEN) is (isinstance(answer, httpx.Response) and answer.is_success)
    assert parse_qs(route.calls.last.request.content.decode()) == {"token": [REFRESH_TOKEN]}
    assert not any(secret in caplog.text for secret in SECRETS)


async def test_a_token_request_goes_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment behind an egress proxy: the token POST takes the client's proxied route (never DNS here)."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        body = json.dumps(OK).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = make_http_client(5.0)  # reads the environment, as the worker's does at start-up
    provider = OAuthProvider(
        client, spec=google.SPEC, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
        token_url="http://oauth2.example.test/token", auth_url=AUTH_URL, retry=RetryPolicy(1),
    )  # fmt: skip
    try:
        assert (await provider.refresh(REFRESH_TOKEN)).access_token == ACCESS_TOKEN
    finally:
        server.close()
        await client.aclose()
    assert [request.split(b"\r\n")[0] for request in seen] == [b"POST http://oauth2.example.test/token HTTP/1.1"]


async def test_a_cookie_one_answer_sets_never_rides_along_a_later_request_on_the_wire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The aiohttp session under the token client keeps no cookie either (a host name, through a proxy, so a
    cookie jar would accept one: it refuses cookies from bare IP addresses)."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof() and (head := await reader.readuntil(b"\r\n\r\n")):
            seen.append(head)
            await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
            body = json.dumps(OK).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: NID=user-a; Path=/\r\nContent-Length: %d\r\n\r\n" % len(body))
            writer.write(body)
            await writer.drain()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = make_http_client(5.0)
    provider = OAuthProvider(
        client, spec=google.SPEC, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
        token_url="http://oauth2.example.test/token", auth_url=AUTH_URL, retry=RetryPolicy(1),
    )  # fmt: skip
    try:
        for _ in range(2):
            assert (await provider.refresh(REFRESH_TOKEN)).access_token == ACCESS_TOKEN
    finally:
        server.close()
        await client.aclose()
    assert len(seen) == 2
    assert not any(b"\r\ncookie:" in head.lower() for head in seen)


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted-certificate", "trusted-certificate"])
async def test_the_token_post_verifies_the_endpoint_certificate(
    trusted: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct POST keeps the transport's TLS context: a certificate nobody vouches for is refused before the
    form (with the client secret and the refresh token) leaves; one the trust store names is accepted."""
    context, ca_file = self_signed_tls(tmp_path)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    else:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    received: list[bytes] = []

    async def endpoint(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.append(await reader.readuntil(b"\r\n\r\n"))
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client refused the handshake
        body = json.dumps(OK).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(endpoint, "127.0.0.1", 0, ssl=context)
    client = make_http_client(5.0)  # reads the trust store at start-up, as the worker's does
    provider = OAuthProvider(
        client, spec=google.SPEC, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, retry=RetryPolicy(1),
        token_url=f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/token", auth_url=AUTH_URL,
    )  # fmt: skip
    try:
        if trusted:
            assert (await provider.refresh(REFRESH_TOKEN)).access_token == ACCESS_TOKEN
            assert len(received) == 1
        else:
            with pytest.raises(OAuthTransientError) as caught:
                await provider.refresh(REFRESH_TOKEN)
            assert caught.value.error_code == "connect_error"
            assert received == []
    finally:
        server.close()
        await client.aclose()
