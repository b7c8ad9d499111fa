"""The /v1 API's errors: always `{"error": {"code": ..., "message": ...}}` with a fitting status.

Messages are written for the host app's developers and never include a token, a key or an exception's text.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

CODE_FOR_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(HTTPException):
    """Ends an API request with a JSON error; `code` is stable, `message` is for people."""

    def __init__(
        self, status_code: int, code: str, message: str, *, headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(status_code, message, headers=dict(headers) if headers else None)
        self.code = code
        self.extra = dict(extra or {})


def error_response(exc: HTTPException) -> Response:
    """Any HTTPException raised under /v1 (the router's 404 and 405 included) in the API's error shape."""
    if isinstance(exc, ApiError):
        body = {"code": exc.code, "message": exc.detail, **exc.extra}
    else:
        body = {"code": CODE_FOR_STATUS.get(exc.status_code, "error"), "message": exc.detail}
    return JSONResponse({"error": body}, status_code=exc.status_code, headers=exc.headers)


def internal_error() -> Response:
    message = "Something went wrong on our side; nothing was changed. Try again in a minute."
    return JSONResponse({"error": {"code": "internal_error", "message": message}}, status_code=500)


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def unauthorized() -> ApiError:
    message = "Send a valid API key as `Authorization: Bearer <key>` (create one with `tokenwarden api-key create`)."
    return ApiError(401, "unauthorized", message, headers={"www-authenticate": "Bearer"})
