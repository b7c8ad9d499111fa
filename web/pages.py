"""What every endpoint shares: the app's resources, page rendering, and errors that end on a clear page.

Endpoints raise `PageError` with words meant for people; `app.py` renders it as an HTML page, or as
JSON under /api/. Messages never include a token, a code, a secret or an exception's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from statemachine.mail.emails import format_utc, provider_display_name
from statemachine.services.runtime import Runtime
from web.signing import Signing

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class WebContext:
    """The long-lived resources of the web process, opened once (lifespan) or injected by tests."""

    runtime: Runtime
    redis: Redis
    signing: Signing

    @property
    def base_url(self) -> str:
        return self.runtime.settings.base_url

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")


class PageError(HTTPException):
    """Ends the request on a page that says what happened and what to do; `title` is the heading."""

    def __init__(self, status_code: int, title: str, detail: str) -> None:
        super().__init__(status_code, detail)
        self.title = title


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # NUL and the like; tabs and line breaks are text


def text_field(value: object, what: str, limit: int) -> str | None:
    """A form or query value as stripped text of at most `limit` characters (None when empty).

    PostgreSQL cannot store NUL, so a value with control characters ends on a 400 page, not a database error.
    """
    text = str(value or "").strip()
    if _CONTROL.search(text):
        raise PageError(400, "Request refused", f"The {what} contains control characters; please retype it.")
    return text[:limit] or None


class IdConvertor(Convertor[int]):
    """`{name:id}` in a route: a row id, at most 18 digits so it always fits PostgreSQL's bigint (else 404)."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


def context_of(request: Request) -> WebContext:
    web: WebContext = request.app.state.web
    return web


def _when(value: object) -> str:
    """Jinja filter: an aware datetime (or its ISO text, as the JSON read models give it) as readable UTC."""
    if value is None or value == "":
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return format_utc(moment) if isinstance(moment, datetime) else str(value)


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.filters["when"] = _when
    templates.env.filters["provider_name"] = provider_display_name
    return templates


TEMPLATES = make_templates()


def render(request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    """Render templates/pages/<name> with the signed-in user (if any) and their CSRF token."""
    auth = getattr(request.state, "auth", None)
    extra = getattr(request.app.state, "page_context", {})  # what an AppExtension adds (the demo's strip)
    values = {**extra, "auth": auth, "csrf_token": auth.csrf if auth else "", **(context or {})}
    return TEMPLATES.TemplateResponse(request, f"pages/{name}", values, status_code=status_code)
