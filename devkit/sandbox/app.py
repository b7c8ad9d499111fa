"""The sandbox provider as one Starlette app: the routes and a fresh state for one OAuth client."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from devkit.sandbox.authorize import authorize_decision, authorize_page
from devkit.sandbox.control import (
    bad_sandbox_request,
    delete_faults,
    get_requests,
    list_accounts,
    list_faults,
    post_account,
    post_fault,
    post_token,
    reset_all,
    reset_requests,
)
from devkit.sandbox.state import ACCESS_TOKEN_LIFETIME, SandboxRequestError, SandboxState
from devkit.sandbox.token import revoke_endpoint, token_endpoint

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"


def create_sandbox_app(
    *, client_id: str, client_secret: str, redirect_uris: tuple[str, ...] = (),
    access_token_lifetime: int = ACCESS_TOKEN_LIFETIME,
) -> Starlette:  # fmt: skip
    """A fresh sandbox provider for one OAuth client; `redirect_uris` empty accepts any http(s) URL.

    `access_token_lifetime` (seconds) is shortened by time-compressed simulations (`tokenwarden simulate`).
    """
    routes = [
        Route("/authorize", authorize_page, methods=["GET"], name="authorize"),
        Route("/authorize", authorize_decision, methods=["POST"], name="authorize_decision"),
        Route("/token", token_endpoint, methods=["POST"], name="token"),
        Route("/revoke", revoke_endpoint, methods=["POST"], name="revoke"),
        Route("/_sandbox/accounts", post_account, methods=["POST"]),
        Route("/_sandbox/accounts", list_accounts, methods=["GET"]),
        Route("/_sandbox/tokens", post_token, methods=["POST"]),
        Route("/_sandbox/faults", post_fault, methods=["POST"]),
        Route("/_sandbox/faults", delete_faults, methods=["DELETE"]),
        Route("/_sandbox/faults", list_faults, methods=["GET"]),
        Route("/_sandbox/requests", get_requests, methods=["GET"]),
        Route("/_sandbox/requests", reset_requests, methods=["DELETE"]),
        Route("/_sandbox/reset", reset_all, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={SandboxRequestError: bad_sandbox_request})
    app.state.sandbox = SandboxState(client_id, client_secret, tuple(redirect_uris))
    app.state.sandbox.access_token_lifetime = access_token_lifetime
    app.state.sandbox_templates = Jinja2Templates(directory=TEMPLATES_DIR)
    return app
