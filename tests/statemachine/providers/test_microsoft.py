"""The Microsoft adapter through respx: tenant endpoints, rotation, and the id_token's tid/oid checks."""

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from statemachine.core.errors import OAuthConfigError
from statemachine.providers import microsoft
from statemachine.providers.oauth import OAuthProvider, RetryPolicy
from statemachine.services.settings import load_settings
from tests.statemachine.providers.test_oauth import id_token

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
OID = "00000000-0000-0000-66f3-3332eca7ea81"
CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"


def adapter(http: httpx.AsyncClient, tenant: str = "common") -> OAuthProvider:
    client = load_settings({"MICROSOFT_TENANT": tenant}).providers["microsoft"]
    return OAuthProvider(
        http, spec=microsoft.SPEC, client_id=CLIENT_ID, client_secret="SECRET", token_url=client.token_url,
        auth_url=client.auth_url, scopes=client.scopes, tenant=client.tenant, retry=RetryPolicy(base_seconds=0),
    )  # fmt: skip


def claims(tid: str = TENANT, **extra: Any) -> dict[str, Any]:
    base = {"aud": CLIENT_ID, "exp": time.time() + 600, "iss": f"https://login.microsoftonline.com/{tid}/v2.0"}
    return base | {"tid": tid, "oid": OID, "email": "ana@contoso.test"} | extra


def answer(refresh_token: str, **token_claims: Any) -> dict[str, Any]:
    return {
        "access_token": "AT",
        "expires_in": 3599,
        "refresh_token": refresh_token,
        "id_token": id_token(**token_claims),
    }


async def test_refresh_goes_to_the_tenants_endpoint_and_returns_the_new_token_and_the_account(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    url = "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    route = endpoint.post(url).respond(200, json=answer("RT-2", **claims()))
    grant = await adapter(http_client, "organizations").refresh("RT-1")
    assert (grant.refresh_token, grant.subject) == ("RT-2", f"{TENANT}/{OID}")
    assert parse_qs(route.calls.last.request.content.decode())["refresh_token"] == ["RT-1"]


async def test_a_refresh_answer_without_a_refresh_token_keeps_the_old_one(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter
) -> None:
    endpoint.post(microsoft.SPEC.token_url.default.replace("{tenant}", "common")).respond(
        200, json={"access_token": "AT", "expires_in": 3599}
    )
    grant = await adapter(http_client).refresh("RT-1")
    assert (grant.refresh_token, grant.subject) == (None, None)


@pytest.mark.parametrize(
    ("tenant", "token_claims"),
    [
        ("common", claims(iss="https://login.microsoftonline.com/common/v2.0")),  # not the token's own tenant
        ("common", claims(iss="https://evil.test/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0")),
        ("common", claims(aud="someone-elses-app")),
        ("common", claims(exp=time.time() - 5)),
        ("common", {k: v for k, v in claims().items() if k != "tid"}),
        (TENANT, claims(tid=OTHER_TENANT)),  # a tenant-only app gets a token of another tenant
    ],
    ids=["issuer-names-common", "foreign-issuer", "audience", "expired", "no-tid", "other-tenant"],
)
async def test_an_id_token_not_for_us_refuses_the_connect_and_teaches_a_refresh_nothing(
    http_client: httpx.AsyncClient, endpoint: respx.MockRouter, tenant: str, token_claims: dict[str, Any]
) -> None:
    endpoint.post(url__regex=r".*/token").respond(200, json=answer("RT-2", **token_claims))
    provider = adapter(http_client, tenant)
    with pytest.raises(OAuthConfigError):
        await provider.exchange_code(
            code="c", redirect_uri="https://tw.test/auth/microsoft/callback", code_verifier="v"
        )
    grant = await provider.refresh("RT-1")
    assert (grant.refresh_token, grant.subject) == ("RT-2", None)


async def test_a_tenant_app_accepts_its_own_tenant(http_client: httpx.AsyncClient, endpoint: respx.MockRouter) -> None:
    endpoint.post(url__regex=r".*/token").respond(200, json=answer("RT-2", **claims()))
    grant = await adapter(http_client, TENANT.upper()).exchange_code(
        code="c", redirect_uri="https://r", code_verifier="v"
    )
    assert grant.subject == f"{TENANT}/{OID}"


def test_the_consent_url_asks_for_the_tenant_and_the_scopes(http_client: httpx.AsyncClient) -> None:
    url = adapter(http_client, "consumers").authorization_url(
        redirect_uri="https://tw.test/auth/microsoft/callback", state="s", code_challenge="c",
        scopes=microsoft.SPEC.scopes, login_hint="ana@outlook.test",
    )  # fmt: skip
    parts = urlsplit(url)
    assert parts.path == "/consumers/oauth2/v2.0/authorize"
    query = parse_qs(parts.query)
    assert {"openid", "profile", "offline_access"} <= set(query["scope"][0].split())
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
