"""The OpenAPI 3.1 description of /v1, served at GET /v1/openapi.json.

Written as data beside the routes; tests/web/v1/test_openapi.py checks it against the app's own
route table (every /v1 route and method described, nothing described that is not routed) and
schemathesis checks the responses against the schemas.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from statemachine.core.states import State
from statemachine.providers import registry
from statemachine.store.models import WEBHOOK_EVENT_TYPES

Schema = dict[str, Any]

NULLABLE_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
MAILBOX: Schema = {
    "type": "object",
    "required": [
        "id",
        "user_email",
        "address",
        "provider",
        "state",
        "is_active",
        "reason",
        "banner",
        "next_refresh_at",
        "last_refreshed_at",
        "removed_at",
        "reconnect_url",
    ],
    "properties": {
        "id": {"type": "integer"},
        "user_email": {"type": "string"},
        "address": {"type": "string"},
        "provider": {"type": "string"},
        "state": {"enum": [s.value for s in State]},
        "is_active": {"type": "boolean"},
        "reason": {"type": ["string", "null"], "description": "why it is not healthy, in plain words"},
        "banner": {
            "type": "object",
            "required": ["level", "title", "text"],
            "properties": {
                "level": {"enum": ["quiet", "calm", "warning", "danger"]},
                "title": {"type": "string"},
                "text": {"type": ["string", "null"]},
            },
        },
        "next_refresh_at": NULLABLE_TIME,
        "last_refreshed_at": NULLABLE_TIME,
        "removed_at": NULLABLE_TIME,
        "reconnect_url": {"type": ["string", "null"], "description": "for the user; null when healthy"},
    },
}
ACCESS_TOKEN: Schema = {
    "type": "object",
    "required": ["access_token", "expires_at", "scope"],
    "properties": {
        "access_token": {"type": "string"},
        "expires_at": NULLABLE_TIME,
        "scope": {
            "type": ["string", "null"],
            "description": "The grant's scopes, space-separated, as the provider last named them; null until it has.",
        },
    },
}
ENDPOINT: Schema = {
    "type": "object",
    "required": ["id", "url", "events", "enabled", "created_at", "failing_since", "disabled_at"],
    "properties": {
        "id": {"type": "integer"},
        "url": {"type": "string"},
        "events": {"type": "array", "items": {"enum": list(WEBHOOK_EVENT_TYPES)}},
        "enabled": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "failing_since": NULLABLE_TIME,
        "disabled_at": NULLABLE_TIME,
        "secret": {"type": "string", "description": "only in the answer to create: whsec_ + base64"},
    },
}
ENDPOINT_ID = {"name": "endpoint_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
MAILBOX_ID = {"name": "mailbox_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def _json(schema: Schema) -> Schema:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Schema:
    return {"description": description, **_json({"$ref": "#/components/schemas/Error"})}


def _operation(
    summary: str,
    ok: tuple[str, Schema],
    *errors: int,
    body: Schema | None = None,
    missing: str = "no such mailbox",
    **extra: Any,
) -> Schema:
    status, response = ok
    words = {401: "missing, malformed, wrong or revoked API key", 404: missing, 409: "mailbox disconnected",
             422: "invalid input", 503: "no valid token now; see Retry-After"}  # fmt: skip
    responses = {status: response, "401": _error(words[401]), **{str(e): _error(words[e]) for e in errors}}
    operation: Schema = {"summary": summary, "security": [{"apiKey": []}], "responses": responses, **extra}
    if body is not None:
        operation["requestBody"] = {"required": False, **_json(body)}
    return operation


def document() -> Schema:
    ref = {"$ref": "#/components/schemas/Mailbox"}
    page = {
        "type": "object",
        "required": ["data", "next_cursor"],
        "properties": {"data": {"type": "array", "items": ref}, "next_cursor": {"type": ["string", "null"]}},
    }
    query = [
        {"name": "user_email", "in": "query", "schema": {"type": "string"}},
        {"name": "state", "in": "query", "schema": {"enum": [s.value for s in State]}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
            "description": "next_cursor of the previous page",
        },
        {"name": "include_removed", "in": "query", "schema": {"enum": ["true", "false"]}},
    ]
    min_valid = {
        "type": "object",
        "properties": {"min_valid_seconds": {"type": "integer", "minimum": 0, "maximum": 1800}},
    }
    failure = {"type": "object", "properties": {"status": {"type": "integer", "minimum": 400, "maximum": 599},
                                                "detail": {"type": "string", "maxLength": 2000}}}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tokenwarden host-app API", "version": "1"},
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR, "Mailbox": MAILBOX, "AccessToken": ACCESS_TOKEN, "WebhookEndpoint": ENDPOINT},
        },
        "paths": {
            "/v1/mailboxes": {
                "get": _operation(
                    "List mailboxes", ("200", {"description": "a page", **_json(page)}), 422, parameters=query
                ),
            },
            "/v1/mailboxes/{mailbox_id}": {
                "delete": _operation(
                    "Remove a mailbox: its grant is revoked at the provider, its history kept",
                    ("204", {"description": "removed (or already removed)"}),
                    404,
                    parameters=[MAILBOX_ID],
                ),
                "get": _operation(
                    "One mailbox", ("200", {"description": "the mailbox", **_json(ref)}), 404, parameters=[MAILBOX_ID]
                ),
            },
            "/v1/mailboxes/{mailbox_id}/access-token": {
                "post": _operation(
                    "A fresh access token",
                    ("200", {"description": "the token", **_json({"$ref": "#/components/schemas/AccessToken"})}),
                    404,
                    409,
                    422,
                    503,
                    body=min_valid,
                    parameters=[MAILBOX_ID],
                ),
            },
            "/v1/mailboxes/{mailbox_id}/auth-failures": {
                "post": _operation(
                    "Report a refused access token",
                    ("200", {"description": "the mailbox", **_json(ref)}),
                    404,
                    422,
                    body=failure,
                    parameters=[MAILBOX_ID],
                ),
            },
            **_webhook_paths(),
            **_connect_paths(),
        },
    }


def _webhook_paths() -> Schema:
    endpoint = {"$ref": "#/components/schemas/WebhookEndpoint"}
    events = {"type": "array", "items": {"type": "string"}}
    new = {"type": "object", "required": ["url", "events"], "properties": {"url": {"type": "string"}, "events": events}}
    secret = {
        "type": "object",
        "required": ["id", "secret"],
        "properties": {"id": {"type": "integer"}, "secret": {"type": "string"}},
    }
    listing = {"type": "object", "required": ["data"], "properties": {"data": {"type": "array", "items": endpoint}}}
    one: dict[str, Any] = {"parameters": [ENDPOINT_ID], "missing": "no such webhook endpoint"}
    return {
        "/v1/webhook-endpoints": {
            "post": _operation(
                "Create a webhook endpoint (its secret is shown once)",
                ("201", {"description": "created", **_json(endpoint)}),
                422,
                body=new,
            ),
            "get": _operation("List webhook endpoints", ("200", {"description": "every endpoint", **_json(listing)})),
        },
        "/v1/webhook-endpoints/{endpoint_id}": {
            "delete": _operation("Delete a webhook endpoint", ("204", {"description": "deleted"}), 404, **one),
        },
        "/v1/webhook-endpoints/{endpoint_id}/rotate-secret": {
            "post": _operation(
                "Replace the signing secret", ("200", {"description": "the new secret", **_json(secret)}), 404, **one
            ),
        },
        "/v1/webhook-endpoints/{endpoint_id}/enable": {
            "post": _operation(
                "Re-enable a disabled endpoint", ("200", {"description": "the endpoint", **_json(endpoint)}), 404, **one
            ),
        },
    }


def _connect_paths() -> Schema:
    new = {
        "type": "object",
        "required": ["user_email", "return_url"],
        "properties": {
            "user_email": {"type": "string", "format": "email"},
            "provider": {"enum": list(registry.NAMES), "description": "default: the first of these"},
            "return_url": {"type": "string", "description": "under one of TOKENWARDEN_ALLOWED_RETURN_URLS"},
            "mailbox_id": {"type": "integer", "minimum": 1, "description": "reconnect this mailbox"},
            "login_hint": {"type": "string", "maxLength": 320},
        },
    }
    created = {
        "type": "object",
        "required": ["id", "url", "expires_at"],
        "properties": {"id": {"type": "string"}, "url": {"type": "string"},
                       "expires_at": {"type": "string", "format": "date-time"}},
    }  # fmt: skip
    statuses = ["pending", "connected", "reconnected", "denied", "rejected", "expired", "failed"]
    view = {
        "type": "object",
        "required": ["id", "status", "mailbox_id", "user_email", "provider", "return_url", "created_at", "expires_at"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": statuses},
            "mailbox_id": {"type": ["integer", "null"]},
            "user_email": {"type": "string"},
            "provider": {"type": "string"},
            "return_url": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time"},
        },
    }
    session_id = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/v1/connect-sessions": {
            "post": _operation(
                "A single-use link that connects (or reconnects) a mailbox for a user",
                ("201", {"description": "created", **_json(created)}), 422, body=new,
            ),
        },
        "/v1/connect-sessions/{session_id}": {
            "get": _operation(
                "A connect session's outcome (authoritative; the redirect's query is not)",
                ("200", {"description": "the session", **_json(view)}), 404, parameters=[session_id],
                missing="no such connect session",
            ),
        },
    }  # fmt: skip


async def openapi_json(request: Request) -> Response:
    """GET /v1/openapi.json: public, like any API description (it holds no data)."""
    return JSONResponse(document())
