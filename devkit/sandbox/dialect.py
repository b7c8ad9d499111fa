"""What differs between the sandbox providers: paths, error bodies, fault answers, id_tokens and rotation.

Why: the sandbox Google and the sandbox Microsoft share everything else (state, faults, the control API, the
consent page); a `Dialect` is the one object the handlers ask for anything provider-shaped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response

from devkit.sandbox.state import Account, Fault, FaultMode

# The refusals the token endpoint gives without a fault; each dialect words them its own way.
REFUSALS = (
    "missing_client",  # no client_id in the request
    "invalid_client",  # wrong client id or secret
    "unsupported_grant_type",
    "missing_refresh_token",
    "unknown_refresh_token",  # never issued, reset, or rotated away
    "bad_code",  # unknown, expired, reused or another client's code
    "redirect_mismatch",
    "missing_verifier",
    "bad_verifier",
)


@dataclass(frozen=True, kw_only=True)
class Dialect:
    """One provider's shape. `refuse` answers a `REFUSALS` key; `success` writes a token answer as the provider."""

    name: str  # the provider's name in the registry
    label: str  # on the consent page: "Sandbox Google"
    mount: str  # its path in the server that serves every dialect (`create_sandboxes`): "" or "/microsoft"
    token_path: str
    authorize_path: str
    refuse: Callable[[str], Response]
    success: Callable[[Mapping[str, Any]], Response]
    faults: Mapping[FaultMode, Callable[[Fault], Response]]
    id_token: Callable[[str, Account, str | None], str]  # (client_id, account, nonce)
    new_refresh_token: Callable[[], str]
    new_subject: Callable[[], str]  # an account id: Google's `sub`, Microsoft's `oid`
    default_tenant: str | None = None  # Microsoft: the `tid` of accounts added without one
    rotates: bool = False  # a new refresh token on every refresh; the old one stays valid (Microsoft)

    def __post_init__(self) -> None:
        missing = set(FaultMode) - {FaultMode.TIMEOUT} - set(self.faults)
        if missing:
            raise ValueError(f"{self.name} has no answer for fault mode(s) {sorted(missing)}")


def sandbox_dialect(app: Starlette) -> Dialect:
    """The provider a sandbox app imitates."""
    dialect: Dialect = app.state.sandbox_dialect
    return dialect
