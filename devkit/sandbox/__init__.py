"""Local stand-ins for Google's and Microsoft's OAuth 2.0 authorization and token endpoints, for tests and the demo.

Why: end-to-end tests and the demo need a provider that answers like Google (same JSON shapes and
headers, PKCE S256, optional refresh-token rotation) and that can be told to fail in each way
docs/errors.md describes, on 127.0.0.1 and without network access.

NEVER mount or run this in production: anyone who clicks "Allow" gets tokens, the /_sandbox control
API has no authentication, and every account, token and code lives only in this process's memory.

    GET/POST /authorize   consent page listing the sandbox accounts; redirects back with code + state
    POST /token           grant_type=refresh_token | authorization_code, Google-shaped JSON
    /_sandbox/...         control API for tests: accounts, tokens, faults, request counts

State is changed only by the app's handlers, on uvicorn's loop; tests use the HTTP control API (or
`sandbox_state(app)` before the app is served).

The sandbox Microsoft (`create_sandbox_app(..., dialect=MICROSOFT)`) serves the same routes under
/{tenant}/oauth2/v2.0/ (authorize, token) with Microsoft's answers: AADSTS error bodies, a new refresh token on
every refresh, id_tokens naming the account by tid and oid.

Modules: `state` (data), `dialect` (what differs per provider), `responses` (the Google dialect), `microsoft`
(the Microsoft dialect), `token`, `authorize`, `control` (the /_sandbox API) and `app` (the routes).
"""

from devkit.sandbox.app import (
    DIALECT_MOUNTS,
    DIALECTS,
    create_sandbox_app,
    create_sandboxes,
    sandbox_states,
    sandboxes_environment,
)
from devkit.sandbox.control import parse_fault
from devkit.sandbox.dialect import Dialect
from devkit.sandbox.microsoft import MICROSOFT
from devkit.sandbox.responses import GOOGLE
from devkit.sandbox.state import (
    ACCESS_TOKEN_LIFETIME,
    MALFORMED_BODIES,
    PROVIDER_WIDE,
    Account,
    Fault,
    FaultMode,
    Grant,
    SandboxRequestError,
    SandboxState,
    new_refresh_token,
    pkce_challenge,
    sandbox_state,
)

__all__ = [
    "ACCESS_TOKEN_LIFETIME",
    "DIALECTS",
    "DIALECT_MOUNTS",
    "GOOGLE",
    "MALFORMED_BODIES",
    "MICROSOFT",
    "PROVIDER_WIDE",
    "Account",
    "Dialect",
    "Fault",
    "FaultMode",
    "Grant",
    "SandboxRequestError",
    "SandboxState",
    "create_sandbox_app",
    "create_sandboxes",
    "new_refresh_token",
    "parse_fault",
    "pkce_challenge",
    "sandbox_state",
    "sandbox_states",
    "sandboxes_environment",
]  # fmt: skip
