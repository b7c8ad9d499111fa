"""A sandbox provider as one Starlette app: the routes and a fresh state for one OAuth client, in one dialect."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount, Route
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
from devkit.sandbox.dialect import Dialect, sandbox_dialect
from devkit.sandbox.gmail import gmail_profile, revoke_endpoint
from devkit.sandbox.microsoft import MICROSOFT
from devkit.sandbox.responses import GOOGLE
from devkit.sandbox.state import ACCESS_TOKEN_LIFETIME, SandboxRequestError, SandboxState, sandbox_state
from devkit.sandbox.token import token_endpoint
from statemachine.providers import registry

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
# what a host app does with the tokens, where the provider has it: revocation (RFC 7009) and a Gmail-like API
PROVIDER_APIS: dict[str, tuple[Route, ...]] = {
    "google": (
        Route("/revoke", revoke_endpoint, methods=["POST"], name="revoke"),
        Route("/gmail/v1/users/me/profile", gmail_profile, methods=["GET"], name="gmail_profile"),
    ),
}


def create_sandbox_app(
    *, client_id: str, client_secret: str, redirect_uris: tuple[str, ...] = (),
    access_token_lifetime: int = ACCESS_TOKEN_LIFETIME, dialect: Dialect = GOOGLE,
) -> Starlette:  # fmt: skip
    """A fresh sandbox provider for one OAuth client; `redirect_uris` empty accepts any http(s) URL.

    `access_token_lifetime` (seconds) is shortened by time-compressed simulations (`tokenwarden simulate`).
    `dialect` is the provider it imitates: its paths, answers and faults (the sandbox Google or Microsoft).
    """
    routes = [
        Route(dialect.authorize_path, authorize_page, methods=["GET"], name="authorize"),
        Route(dialect.authorize_path, authorize_decision, methods=["POST"], name="authorize_decision"),
        Route(dialect.token_path, token_endpoint, methods=["POST"], name="token"),
        *PROVIDER_APIS.get(dialect.name, ()),
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
    app.state.sandbox = SandboxState(
        client_id, client_secret, tuple(redirect_uris), access_token_lifetime=access_token_lifetime,
        token_factory=dialect.new_refresh_token, subject_factory=dialect.new_subject,
        default_tenant=dialect.default_tenant,
    )  # fmt: skip
    app.state.sandbox_dialect = dialect
    app.state.sandbox_templates = Jinja2Templates(directory=TEMPLATES_DIR)
    return app


DIALECTS: tuple[Dialect, ...] = (MICROSOFT, GOOGLE)  # Google last: it is mounted at the root
DIALECT_MOUNTS = {dialect.name: dialect.mount for dialect in DIALECTS}


def create_sandboxes(
    *, client_id: str, client_secret: str, access_token_lifetime: int = ACCESS_TOKEN_LIFETIME
) -> Starlette:
    """Every sandbox provider in one server, for one OAuth client: each under its dialect's `mount`."""
    apps = {
        dialect.mount: create_sandbox_app(
            client_id=client_id, client_secret=client_secret, access_token_lifetime=access_token_lifetime,
            dialect=dialect,
        )
        for dialect in DIALECTS
    }  # fmt: skip
    return Starlette(routes=[Mount(mount or "/", app=app) for mount, app in apps.items()])


def sandboxes_environment(url: str, client_id: str, client_secret: str) -> dict[str, str]:
    """The settings that point every provider at `create_sandboxes` served at `url`, with its client."""
    env: dict[str, str] = {}
    for dialect in DIALECTS:
        spec = registry.get(dialect.name)
        base = f"{url}{dialect.mount}"
        token, auth = (
            base + path.replace("{tenant}", "common") for path in (dialect.token_path, dialect.authorize_path)
        )
        env |= {spec.token_url.env: token, spec.auth_url.env: auth}
        if spec.revoke_url is not None:
            env[spec.revoke_url.env] = f"{base}/revoke"  # PROVIDER_APIS serves it where the provider has one
        env |= {spec.client_id_env: client_id, spec.client_secret_env: client_secret}
    return env


def sandbox_states(app: Starlette) -> dict[str, SandboxState]:
    """The state of each provider in a `create_sandboxes` app, by provider name (to seed it before serving)."""
    return {
        sandbox_dialect(route.app).name: sandbox_state(route.app)
        for route in app.routes
        if isinstance(route, Mount) and isinstance(route.app, Starlette)
    }
