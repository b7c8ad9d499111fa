"""Reading a /v1 request's JSON body: an object or nothing; anything else is a clear 422, never a traceback."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from web.v1.errors import invalid

MAX_BODY_BYTES = 64 * 1024


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise invalid(f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise invalid("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("the body is a JSON object")
    return body


def whole_number(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"{name} is a whole number from {low} to {high}")
    return value


def text(body: dict[str, Any], name: str, *, max_length: int, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise invalid(f"{name} is {'a' if required else 'an optional'} string of at most {max_length} characters")
    return value
