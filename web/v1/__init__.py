"""The host-app API under /v1: API-key authentication, JSON in and out, errors as `{"error": {...}}`."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from web.v1 import connect_sessions, mailboxes, tokens, webhooks
from web.v1.openapi import openapi_json

PREFIX = "/v1"

routes: list[BaseRoute] = [
    Route("/v1/openapi.json", openapi_json, methods=["GET"]),
    *mailboxes.routes,
    *tokens.routes,
    *webhooks.routes,
    *connect_sessions.routes,
]


def is_api_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")
