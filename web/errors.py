"""The 500 page (under /v1, the API's JSON error), rendered inside the security-header middleware, with its headers.

Starlette's own handler for `Exception` runs outside every middleware and re-raises, so the server
logs the traceback, whose last line holds a database error's SQL and parameters. This layer logs
the exception's type and where it happened, and nothing of its text.
"""

from __future__ import annotations

import logging
import traceback

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web import v1
from web.pages import render
from web.v1 import errors as v1_errors

logger = logging.getLogger("tokenwarden.web")
DETAIL = "Something went wrong on our side. Nothing secret was shown; please try again in a minute."


class ServerErrorPage:
    """Pure ASGI middleware: an unhandled exception ends on the "Something went wrong" page (or, once the
    response has started, on a closed connection), never on a traceback in the log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as err:  # the last resort: every failure ends on the same page
            frame = traceback.extract_tb(err.__traceback__)[-1]
            where = f"{frame.filename}:{frame.lineno}"
            logger.error("unhandled %s on %s %s at %s", type(err).__name__, scope["method"], scope["path"], where)
            if started:
                return
            if v1.is_api_path(scope["path"]):
                await v1_errors.internal_error()(scope, receive, send)
                return
            request = Request(scope, receive)
            context = {"title": "Something went wrong", "detail": DETAIL}
            await render(request, "message.html", context, status_code=500)(scope, receive, send)
