"""What a host app does with the tokens: POST /revoke (RFC 7009, as Google's) and a Gmail-like profile call.

`GET /gmail/v1/users/me/profile` answers 200 for an access token the sandbox issued and still honours,
401 after it expired or its grant was revoked, as Gmail does; the demo's host app syncs with it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devkit.sandbox.responses import form_field, google_error
from devkit.sandbox.state import sandbox_state


async def revoke_endpoint(request: Request) -> Response:
    """200 when the token's grant was revoked; 400 invalid_token for a token it does not know (Google's answers)."""
    state = sandbox_state(request.app)
    state.count_request("revoke", None)
    token = form_field(await request.form(), "token") or request.query_params.get("token", "")
    if not token or not state.revoke(token):
        return google_error(400, "invalid_token", "Token expired or revoked")
    return JSONResponse({})


async def gmail_profile(request: Request) -> Response:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    account = sandbox_state(request.app).honoured(token.strip()) if scheme.lower() == "bearer" else None
    if account is None:
        body = {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                          "status": "UNAUTHENTICATED"}}  # fmt: skip
        challenge = {"www-authenticate": 'Bearer realm="https://accounts.google.com/"'}
        return JSONResponse(body, status_code=401, headers=challenge)
    return JSONResponse({"emailAddress": account.email, "messagesTotal": 42, "threadsTotal": 17, "historyId": "1234"})
