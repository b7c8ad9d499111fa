"""Which Host headers the app answers, and the one origin every URL it builds uses.

A client's Host header is never reflected: after Starlette's TrustedHostMiddleware refused unknown
hosts, `CanonicalOrigin` puts the base URL's scheme and host in the request, so the URLs Starlette
derives from it (the trailing-slash redirect, `url_for`) point at TOKENWARDEN_BASE_URL.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from statemachine.services.settings import Settings

SAME_HOST = ("localhost", "127.0.0.1")  # platform health checks and callers on the same machine


def allowed_hosts(settings: Settings) -> list[str]:
    """TOKENWARDEN_ALLOWED_HOSTS, or by default the base URL's host plus localhost and 127.0.0.1."""
    if settings.allowed_hosts:
        return list(settings.allowed_hosts)
    return [urlsplit(settings.base_url).hostname or "", *SAME_HOST]


class CanonicalOrigin:
    """Pure ASGI middleware: the request's scheme and Host become the base URL's."""

    def __init__(self, app: ASGIApp, base_url: str) -> None:
        self.app = app
        parts = urlsplit(base_url)
        self.scheme, self.host = parts.scheme, parts.netloc.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(name, value) for name, value in scope["headers"] if name != b"host"]
            scope = {**scope, "scheme": self.scheme, "headers": [*headers, (b"host", self.host)]}
        await self.app(scope, receive, send)
