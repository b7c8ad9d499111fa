"""The Starlette app: routes, security headers, error pages, and the health and metrics endpoints.

`create_app(settings)` checks the configuration at once (a missing secret fails the start, not the
first request). Resources (the core `Runtime` and a Redis client) are opened in the lifespan, or
injected by tests through `context`, which then skips opening them (httpx's ASGITransport runs no
lifespan). uvicorn's access log is replaced by one that leaves out query strings, because login
links and OAuth callbacks carry one-time secrets there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statemachine.services.metrics import refresh_gauges_once
from statemachine.services.runtime import open_runtime
from statemachine.services.settings import Settings, load_settings
from web import api, auth, connect, dashboard, oauth, ops, v1
from web.errors import ServerErrorPage
from web.hosts import CanonicalOrigin, allowed_hosts
from web.pages import PageError, WebContext, context_of, render
from web.signing import Signing
from web.v1 import errors as v1_errors

logger = logging.getLogger("tokenwarden.web")
STATIC_DIR = Path(__file__).resolve().parent / "static"
CHECK_TIMEOUT_SECONDS = 2.0


def security_headers(settings: Settings) -> list[tuple[bytes, bytes]]:
    """No inline script or style, no framing; forms may post only here and to the providers' consent pages
    (Chromium applies form-action to the redirect that follows a POST)."""
    auth_origins = " ".join(sorted({_origin(client.auth_url) for client in settings.providers.values()}))
    csp = ("default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; "
           f"form-action 'self' {auth_origins}")  # fmt: skip
    headers = {
        "content-security-policy": csp,
        "x-frame-options": "DENY",
        "referrer-policy": "same-origin",  # not no-referrer: that makes browsers send `Origin: null` on POSTs
        "x-content-type-options": "nosniff",
        "cross-origin-opener-policy": "same-origin",
    }
    if settings.base_url.startswith("https://"):
        headers["strict-transport-security"] = "max-age=31536000"
    return [(name.encode(), value.encode()) for name, value in headers.items()]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class HeadersAndAccessLog:
    """Pure ASGI middleware: security headers, `no-store` on every dynamic response, and an access log line
    with method, path (no query string), status and time."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                own = {name.lower() for name, _ in message.get("headers", [])}
                # a response that sets one of these itself (the demo's email viewer) knows better
                headers = [*message.get("headers", []), *((n, v) for n, v in self.headers if n not in own)]
                if b"cache-control" not in own and not static:
                    headers.append((b"cache-control", b"no-store"))  # pages and JSON are personal
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            ms = round((time.perf_counter() - started) * 1000, 1)
            fields = {"method": scope["method"], "path": scope["path"], "status": status, "ms": ms}
            logger.info("%s %s %d", scope["method"], scope["path"], status, extra=fields)


async def _check(name: str, probe: Awaitable[object]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await probe
    except Exception as err:  # a health check reports every failure instead of raising it
        logger.warning("health check %s failed: %s", name, type(err).__name__)
        return f"failing ({type(err).__name__})"
    return "ok"


async def _ping_database(web: WebContext) -> None:
    async with web.runtime.sessionmaker() as session:
        await session.execute(text("SELECT 1"))


async def healthz(request: Request) -> Response:
    """GET /healthz: 200 when the database and Redis both answer, else 503; each check is named."""
    web = context_of(request)
    checks = {
        "database": await _check("database", _ping_database(web)),
        "redis": await _check("redis", web.redis.ping()),
    }
    healthy = all(result == "ok" for result in checks.values())
    body = {"status": "ok" if healthy else "failing", "checks": checks}
    return JSONResponse(body, status_code=200 if healthy else 503)


async def metrics(request: Request) -> Response:
    """GET /metrics: a Route, not a Mount (Mount answers /metrics with a redirect to /metrics/).

    The fleet gauges are read from PostgreSQL at each scrape, so they stay true while every worker is down;
    a failed read is logged and the last values are served.
    """
    runtime = context_of(request).runtime
    now, scan = datetime.now(UTC), runtime.settings.scan_interval_seconds
    await _check("gauges", refresh_gauges_once(runtime.sessionmaker, now, scan))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def http_error(request: Request, exc: Exception) -> Response:
    """Every HTTPException (PageError included) as JSON under /api/, else as a page."""
    assert isinstance(exc, HTTPException)
    if v1.is_api_path(request.url.path):
        return v1_errors.error_response(exc)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
    title = exc.title if isinstance(exc, PageError) else {404: "Page not found"}.get(exc.status_code, "Request refused")
    context = {"title": title, "detail": exc.detail, "status": exc.status_code}
    response = render(request, "message.html", context, status_code=exc.status_code)
    response.headers.update(exc.headers or {})
    return response


@dataclass(frozen=True)
class AppExtension:
    """What a tool outside the production app adds to it: more routes, and values every page template sees.

    Production passes none; `tokenwarden demo` (devkit/) adds its /dev/ pages and the "demo timings" strip
    this way, so no setting can turn them on and nothing here knows the demo.
    """

    routes: tuple[BaseRoute, ...] = ()
    page_context: dict[str, object] = field(default_factory=dict)


def create_app(
    settings: Settings | None = None, context: WebContext | None = None, extension: AppExtension | None = None
) -> Starlette:
    """The web app; `uvicorn --factory web.app:create_app` reads the settings from the environment."""
    settings = settings or load_settings(os.environ)
    settings.require("database_url", "encryption_keys", "secret_key")
    assert settings.secret_key is not None
    secret_key = settings.secret_key.reveal()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if context is not None:
            yield
            return
        async with AsyncExitStack() as stack:
            runtime = await stack.enter_async_context(open_runtime(settings))
            redis = Redis.from_url(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            app.state.web = WebContext(runtime, redis, Signing(secret_key))
            yield

    routes: list[BaseRoute] = [
        *dashboard.routes, *auth.routes, *oauth.routes, *connect.routes, *ops.routes, *api.routes, *v1.routes,
        Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]  # fmt: skip
    extension = extension or AppExtension()
    routes += extension.routes
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    # the last added runs first: headers and log around everything, then the Host check, then the 500 page
    app.add_middleware(ServerErrorPage)
    app.add_middleware(CanonicalOrigin, base_url=settings.base_url)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings))
    app.add_middleware(HeadersAndAccessLog, headers=security_headers(settings))
    if context is not None:
        app.state.web = context
    app.state.page_context = extension.page_context
    return app
