"""The token-endpoint adapter: refresh, code exchange and the authorization URL over one shared httpx client.

Generic: one `OAuthProvider` per configured provider, parameterised by its `ProviderSpec` (consent parameters,
extra refresh fields, the id_token claim naming the account, the classification rules). Client credentials go in
the POST body (client_secret_post).

Every failure leaves as an `OAuthError` carrying a `Verdict` from classify.py. Transient failures are retried
in-process for seconds (backoff); anything longer is the caller's next cycle. Secrets travel only in POST
bodies: never in URLs, headers, log lines, exception messages or reprs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import re
import secrets
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

import aiohttp
import backoff
import httpx
from httpx_aiohttp import AiohttpTransport, HttpxAiohttpClient

from statemachine.core.classify import classify_parsed, classify_transport, parse_json_object
from statemachine.core.errors import OAuthError, OAuthTransientError, Verdict, error_for
from statemachine.core.secrets import Secret
from statemachine.core.states import FailureKind
from statemachine.providers.revocation import revoke_token
from statemachine.providers.spec import ProviderSpec
from statemachine.providers.token_post import Answer, post_form

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TOKEN_REQUEST_HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "identity",  # no gzip bomb past our limit
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": f"python-httpx/{httpx.__version__}",  # what the client's defaults sent before
}

# Matched in order, against the aiohttp cause when there is one: httpx-aiohttp 0.2 turns a refused connection, DNS
# failure or server hang-up into httpx.ConnectTimeout and lets a bad status line out as aiohttp's ClientResponseError.
_KIND_BY_EXCEPTION: tuple[tuple[type[BaseException], str], ...] = (
    (aiohttp.ConnectionTimeoutError, "connect_timeout"),
    (aiohttp.ServerTimeoutError, "read_timeout"),
    (aiohttp.ServerDisconnectedError, "remote_protocol_error"),
    (aiohttp.ClientConnectorError, "connect_error"),  # includes DNS and TLS certificate failures
    (aiohttp.ClientHttpProxyError, "network_error"),
    (aiohttp.ClientResponseError, "remote_protocol_error"),
    (aiohttp.ClientPayloadError, "read_error"),
    (httpx.ConnectTimeout, "connect_timeout"),
    (httpx.ReadTimeout, "read_timeout"),
    (httpx.WriteTimeout, "write_timeout"),
    (httpx.PoolTimeout, "pool_timeout"),
    (httpx.ConnectError, "connect_error"),
    (httpx.ReadError, "read_error"),
    (httpx.WriteError, "write_error"),
    (httpx.ProtocolError, "remote_protocol_error"),  # RemoteProtocolError and LocalProtocolError
    (httpx.DecodingError, "remote_protocol_error"),
    (httpx.TimeoutException, "read_timeout"),
    (TimeoutError, "read_timeout"),
)
_NO_RESPONSE_ERRORS = (httpx.RequestError, aiohttp.ClientError, TimeoutError)
_SCOPE_TOKEN = r"[\x21\x23-\x5B\x5D-\x7E]+"  # RFC 6749 section 3.3
_SCOPE = re.compile(f"{_SCOPE_TOKEN}(?: {_SCOPE_TOKEN})*")
MAX_SCOPE_LENGTH = 4096
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# failures that certainly happened before any byte of the request left: only these may resend a single-use code
_UNSENT_KINDS = frozenset({"connect_error", "connect_timeout", "pool_timeout"})


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing a response sets."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _TokenClient(HttpxAiohttpClient):
    """The token client keeps no cookies: one client serves every user's refresh, so a cookie a provider set
    during one user's request would ride along every other user's (a revocation, built by `client.post`,
    carried it). OAuth's back channel never needs one. Not parsing every answer for them also spares about
    a tenth of `send` (0.38 -> 0.34 ms in a micro-benchmark), too little to see in a whole refresh."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NoCookies()

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("the token client keeps no cookies")

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        return _without_cookies(super()._init_transport(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        return _without_cookies(super()._init_proxy_transport(*args, **kwargs))


def _without_cookies(transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
    """Under httpx's jar there is aiohttp's: the transport's session would keep a cookie from one user's answer
    and send it with everyone's next token request (on a host name; aiohttp refuses cookies from IP addresses).
    Its session is opened as httpx-aiohttp opens it (TLS context, pool size, keep-alive), with a jar that keeps
    nothing, when first used."""
    if isinstance(transport, AiohttpTransport):
        limits, tls = transport.limits, transport.ssl_context

        def open_session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(
                limit=limits.max_connections or 0, keepalive_timeout=limits.keepalive_expiry, ssl=tls
            )
            return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

        transport.client = open_session
    return transport


def make_http_client(timeout_seconds: float) -> httpx.AsyncClient:
    """Build the process-wide token client: httpx's API on the aiohttp transport (README, Measurements: ~5x less CPU).

    HttpxAiohttpClient uses AiohttpTransport for proxied routes too (AsyncClient(transport=...) would send
    env-proxied requests through httpcore). A 3xx is never followed: it is classified as transient.
    """
    return _TokenClient(timeout=httpx.Timeout(timeout_seconds), follow_redirects=False)


@dataclass(frozen=True)
class RetryPolicy:
    """In-process retries of one token request: a few tries within seconds, then the caller's schedule."""

    tries: int = 3
    base_seconds: float = 2.0
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.tries < 1 or self.base_seconds < 0 or self.max_seconds < 0:
            raise ValueError("RetryPolicy needs tries >= 1 and non-negative seconds")


@dataclass(frozen=True, kw_only=True)
class TokenGrant:
    """A successful token response; the claims come from an id_token checked by `id_token_claims`."""

    access_token: str = field(repr=False)
    expires_in: int | None = None
    refresh_token: str | None = field(default=None, repr=False)  # None: keep the one we have
    refresh_token_expires_in: int | None = None  # a time-based grant (Google) says when it ends
    scope: str | None = None
    subject: str | None = None  # the spec's subject_claims of the id_token, joined with "/"
    email: str | None = None
    email_verified: bool | None = None


def new_pkce_pair() -> tuple[str, str]:
    """Return a fresh PKCE (verifier, S256 challenge) pair."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=")
    return verifier, challenge.decode("ascii")


class OAuthProvider:
    """One OAuth client at one provider; `spec` says how that provider is spoken to and how it refuses."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        spec: ProviderSpec,
        client_id: str,
        client_secret: str | Secret,
        token_url: str,
        auth_url: str,
        scopes: Sequence[str] | None = None,
        tenant: str | None = None,
        revoke_url: str | None = None,
        retry: RetryPolicy | None = None,
        max_body_bytes: int = 65536,
        deadline_seconds: float = 30.0,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.client_id = client_id
        self._token_url = httpx.URL(token_url)  # parsed once, to pick the transport for it
        self._token_url_text = token_url
        self.auth_url = auth_url
        self.scopes = tuple(scopes or spec.scopes)  # what the consent URL asks for
        self.tenant = tenant
        self.revoke_url = revoke_url
        self.retry = retry or RetryPolicy()  # builds the retrying callables below
        self.max_body_bytes = max_body_bytes
        self.deadline_seconds = deadline_seconds  # the aiohttp transport has no write or total timeout
        self._client = client
        self._client_secret = client_secret if isinstance(client_secret, Secret) else Secret(client_secret)

    async def refresh(self, refresh_token: str, *, account_known: bool = False) -> TokenGrant:
        """Exchange a refresh token, retrying transient failures per `self.retry`; raises the last OAuthError.

        The answer's id_token is read only while the mailbox's account is not known (`account_known`): it names
        the account of a mailbox added by the CLI or an import, and nothing else in a refresh uses it.
        """
        form = {**self.spec.refresh_params, "grant_type": "refresh_token", "refresh_token": refresh_token}
        payload = await self._refresh_with_retries(form)
        try:
            claims = None if account_known else self._claims(payload.get("id_token"))
        except OAuthError:
            logger.warning("ignoring an id_token from %s that failed validation in a refresh answer", self.name)
            claims = None
        return _grant(payload, claims, self.spec.subject_claims)

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> TokenGrant:
        """Redeem an authorization code; retried only when the request certainly never left (a code is single use,
        and Google may revoke the grant when one is sent twice)."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        form["code_verifier"] = code_verifier
        payload = self._check(*await self._exchange_with_retries(form))
        return _grant(payload, self._claims(payload.get("id_token")), self.spec.subject_claims)

    def _claims(self, id_token: object) -> dict[str, Any] | None:
        return id_token_claims(
            id_token, client_id=self.client_id, issuers=self.spec.issuers, tenant=self.tenant, now=datetime.now(UTC)
        )

    async def revoke(self, token: str) -> bool:
        """Revoke the grant behind `token` (RFC 7009, through `revocation.revoke_token`, the one client of a revocation
        endpoint); best effort: False, logged without the token, on failure or when the provider has no endpoint."""
        if self.revoke_url is None:
            return False
        try:
            async with asyncio.timeout(self.deadline_seconds):
                problem = await revoke_token(self._client, self.revoke_url, token)
        except _NO_RESPONSE_ERRORS as exc:
            problem = transport_kind(exc)
        if problem is not None:
            logger.warning("revoking a grant at %s failed: %s", self.name, problem)
        return problem is None

    def authorization_url(
        self,
        *,
        redirect_uri: str,
        state: str,
        code_challenge: str,
        scopes: Sequence[str],
        login_hint: str | None = None,
    ) -> str:
        """Build the consent URL: the spec's consent parameters (code flow, offline access), and PKCE S256."""
        if isinstance(scopes, str):
            raise TypeError("scopes must be a sequence of scope strings, not one string")
        params = {**self.spec.consent_params, "client_id": self.client_id, "redirect_uri": redirect_uri, "state": state}
        params |= {"scope": " ".join(scopes), "code_challenge": code_challenge, "code_challenge_method": "S256"}
        if login_hint:
            params["login_hint"] = login_hint
        return str(httpx.URL(self.auth_url).copy_merge_params(params))

    @property
    def token_url(self) -> str:
        """Read-only: the request is built from its parsed form, which must not go stale."""
        return self._token_url_text

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        """Setting the policy builds the retrying callables once: backoff's decorator cost ~25 µs per request."""
        self._retry = policy
        self._refresh_with_retries = self._retrying(self._attempt, policy)
        self._exchange_with_retries = self._retrying(self._send, policy, unsent_only=True)

    @staticmethod
    def _retrying(
        attempt: Callable[[dict[str, str]], Awaitable[T]], policy: RetryPolicy, *, unsent_only: bool = False
    ) -> Callable[[dict[str, str]], Awaitable[T]]:
        """Wrap one attempt in backoff, configured from `policy`."""

        def giveup(exc: Exception) -> bool:
            sent = not (isinstance(exc, OAuthError) and exc.verdict.code in _UNSENT_KINDS)
            return (unsent_only and sent) or _waits_too_long(exc, policy.max_seconds)

        return backoff.on_exception(
            _waits,
            OAuthTransientError,  # permanent and config errors propagate after one request
            max_tries=policy.tries,
            jitter=None,  # _waits jitters itself: a Retry-After must be honoured exactly
            giveup=giveup,
            on_backoff=_log_retry,
            logger=None,  # backoff's own log lines would print the target's repr and the exception
            base_seconds=policy.base_seconds,
            max_seconds=policy.max_seconds,
        )(attempt)

    async def _attempt(self, form: dict[str, str]) -> dict[str, Any]:
        return self._check(*await self._send(form))

    async def _send(self, form: dict[str, str]) -> Answer:
        """POST the form with our client credentials; the body is None when it exceeds max_body_bytes."""
        data = {**form, "client_id": self.client_id, "client_secret": self._client_secret.reveal()}
        body = urlencode(data).encode("ascii")
        try:
            async with asyncio.timeout(self.deadline_seconds):
                return await post_form(self._client, self._token_url, _TOKEN_REQUEST_HEADERS, body, self.max_body_bytes)
        except _NO_RESPONSE_ERRORS as exc:
            kind = transport_kind(exc)
            logger.debug("token request to %s failed: %s", self.name, type(exc).__name__)
        # raised outside the except block: the httpx exception holds the request, and with it our secrets
        raise error_for(classify_transport(kind))

    def _check(self, status: int, headers: Mapping[str, str], body: bytes | None) -> dict[str, Any]:
        """Return the usable token payload or raise the classified error."""
        if body is None:
            raise error_for(classify_transport("oversized_response"))
        payload = parse_json_object(body)
        verdict = classify_parsed(self.spec.classification, status, headers, payload, now=datetime.now(UTC))
        if verdict is not None:
            raise error_for(verdict)
        assert payload is not None  # classify_parsed succeeds only on a JSON object with an access_token
        return payload


def transport_kind(exc: BaseException) -> str:
    """Name a failure that left no usable response with a classify_transport kind."""
    cause = exc.__cause__
    source = cause if isinstance(cause, aiohttp.ClientError) else exc
    return next((kind for cls, kind in _KIND_BY_EXCEPTION if isinstance(source, cls)), "network_error")


def _waits(*, base_seconds: float, max_seconds: float) -> Generator[float, Any, None]:
    """Backoff wait generator: the server's Retry-After when given, else full jitter over a capped exponential."""
    exc = yield 0.0  # backoff primes the generator; then it sends each failure in
    attempt = 0
    while True:
        retry_after = exc.verdict.retry_after if isinstance(exc, OAuthError) else None
        if retry_after is None:
            ceiling = min(max_seconds, base_seconds * 2 ** min(attempt, 32))
            retry_after = random.uniform(0.0, ceiling)
        attempt += 1
        exc = yield retry_after


def _waits_too_long(exc: Exception, max_seconds: float) -> bool:
    """Give up at once when the server asks for a longer pause than we sleep in-process."""
    return isinstance(exc, OAuthError) and (exc.verdict.retry_after or 0.0) > max_seconds


def _log_retry(details: Any) -> None:
    code = details["exception"].verdict.code  # only OAuthTransientError is retried
    logger.info("token request failed with %s; retrying in %.1f s", code, details["wait"])


def _grant(payload: Mapping[str, Any], claims: Mapping[str, Any] | None, subject_claims: Sequence[str]) -> TokenGrant:
    claims = claims or {}
    parts = [_text(claims.get(claim)) for claim in subject_claims]
    return TokenGrant(
        access_token=payload["access_token"],
        expires_in=_seconds(payload.get("expires_in")),
        refresh_token=_text(payload.get("refresh_token")),
        refresh_token_expires_in=_seconds(payload.get("refresh_token_expires_in")),
        scope=_scope(payload.get("scope")),
        # PostgreSQL refuses a NUL in text: such a claim names no account, rather than failing the cycle
        subject="/".join(cast(list[str], parts)) if all(part and "\x00" not in part for part in parts) else None,
        email=_text(claims.get("email")),
        email_verified=claims["email_verified"] in (True, "true") if "email_verified" in claims else None,
    )


def id_token_claims(
    id_token: object, *, client_id: str, issuers: Sequence[str], tenant: str | None, now: datetime
) -> dict[str, Any] | None:
    """Validate an id_token's payload and return it (None when there is no id_token); the one place that does.

    The signature is not checked: OIDC Core 3.1.3.7 allows that for a token received directly from the token
    endpoint over TLS. The issuer, the audience (with `azp` when there are several), the expiry and the tenant
    are ours to check: `iss` must be one of `issuers` (none given: not checked), which may name the token's own
    `{tid}` (a multi-tenant authority), and a `tenant` given as a GUID pins that claim.

    Raises:
        OAuthError: a CONFIG verdict, for a token not issued for our app, by the provider or for our tenant,
            or expired.
    """
    if id_token is None:
        return None
    parts = id_token.split(".") if isinstance(id_token, str) and id_token.count(".") == 2 else []
    try:
        claims = parse_json_object(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (IndexError, ValueError):
        claims = None
    if claims is None or not _is_valid(claims, client_id, issuers, tenant, now):
        raise error_for(_BAD_ID_TOKEN)
    return claims


def _is_valid(
    claims: Mapping[str, Any], client_id: str, issuers: Sequence[str], tenant: str | None, now: datetime
) -> bool:
    aud, azp, exp, tid = claims.get("aud"), claims.get("azp"), claims.get("exp"), _text(claims.get("tid"))
    audiences = aud if isinstance(aud, list) else [aud]
    if client_id not in audiences or not isinstance(exp, int | float) or not exp > now.timestamp():
        return False
    if not (azp == client_id or (azp is None and len(audiences) == 1)):  # several audiences: azp says who asked
        return False
    if issuers and not any(_issued_by(claims.get("iss"), issuer, tid) for issuer in issuers):
        return False
    return not (tenant is not None and _GUID.fullmatch(tenant) and tid is not None and tid.lower() != tenant.lower())


def _issued_by(iss: object, issuer: str, tid: str | None) -> bool:
    """Whether `iss` is `issuer`, whose "{tid}" stands for the token's own tenant claim (then required)."""
    if "{tid}" in issuer:
        return tid is not None and iss == issuer.format(tid=tid)
    return iss == issuer


def _scope(value: object) -> str | None:
    """A scope in RFC 6749's syntax, else None, as if the answer named none (the stored one stands): it is kept
    in PostgreSQL and handed to host apps, and a NUL would fail the cycle's statement."""
    if isinstance(value, str) and len(value) <= MAX_SCOPE_LENGTH and _SCOPE.fullmatch(value):
        return value
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _seconds(value: object) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)  # Azure AD v1 sent expires_in as a string
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 10**9:  # NaN fails too
        return int(value)
    return None


_BAD_ID_TOKEN = Verdict(
    FailureKind.CONFIG, "invalid_id_token", "The sign-in answer was not issued for our app or has expired."
)
