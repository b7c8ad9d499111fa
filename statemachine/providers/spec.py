"""What a provider module declares: a `ProviderSpec`, plain data plus the classification rules it adds.

Pure: no I/O and no HTTP library, so every layer may read a spec (the store's CHECK constraint, the emails'
wording, the settings). The adapter that talks to the endpoints is `statemachine.providers.oauth`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from statemachine.core.classify import ProviderRules

_NAME = re.compile(r"[a-z][a-z0-9_]{0,15}")  # fits the String(16) provider columns and a URL path segment
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_OIDC_SCOPES = frozenset({"openid", "profile", "offline_access"})


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """One setting of the provider (a URL, its tenant), overridable by an environment variable (tests and the demo
    point the URLs at a sandbox). A URL default may name `{tenant}`: the provider's tenant setting fills it in."""

    env: str
    default: str


@dataclass(frozen=True, kw_only=True)
class ProviderSpec:
    """Everything the code knows about one provider. docs/providers.md lists what adding one takes."""

    name: str  # stored in mailboxes.provider, accepted by `--provider`, the callback path /auth/{name}/callback
    label: str  # what users call it, in banners, pages and emails: "Gmail"
    classification: ProviderRules  # its name in failure reasons ("Google") and its error-body overrides
    token_url: Endpoint
    auth_url: Endpoint
    client_id_env: str
    client_secret_env: str
    scopes: tuple[str, ...]  # asked for at consent, unless `scopes_env` overrides them
    # the id_token claims that identify the account, joined with "/" and remembered as provider_subject
    subject_claims: tuple[str, ...]
    # whether a verified email may stand in for the subject while none is stored; False where the email claim is
    # mutable and unverified (Entra ID: trusting it is the "nOAuth" account takeover)
    email_identifies_account: bool = True
    # the id_token `iss` values accepted (OIDC Core 3.1.3.7 item 2), empty: not checked; "{tid}" in one is the
    # token's own tenant claim (Microsoft's multi-tenant authority)
    issuers: tuple[str, ...] = ()
    tenant: Endpoint | None = None  # which accounts may sign in; fills "{tenant}" in the URL defaults
    # where one grant is revoked (RFC 7009) when the host app removes a mailbox; None: the provider has no such
    # endpoint (Microsoft), and removal only erases the tokens
    revoke_url: Endpoint | None = None
    scopes_env: str | None = None  # overrides `scopes` (space-separated); the OIDC ones in `scopes` must stay
    consent_params: Mapping[str, str] = field(default_factory=dict)  # fixed authorization URL parameters
    refresh_params: Mapping[str, str] = field(default_factory=dict)  # extra form fields of a refresh request

    def __post_init__(self) -> None:
        problems = []
        if not _NAME.fullmatch(self.name):
            problems.append(f"name {self.name!r} must be 1-16 lowercase letters, digits or _")
        envs = [self.token_url.env, self.auth_url.env, self.client_id_env, self.client_secret_env]
        optional = (
            self.tenant.env if self.tenant else None,
            self.scopes_env,
            self.revoke_url.env if self.revoke_url else None,
        )
        envs += [env for env in optional if env]
        problems += [f"{env!r} is not an environment variable name" for env in envs if not _ENV_NAME.fullmatch(env)]
        if not self.label or not self.scopes or not self.subject_claims or not all(self.subject_claims):
            problems.append("label, scopes and subject_claims must not be empty")
        if self.tenant is None and "{tenant}" in self.token_url.default + self.auth_url.default:
            problems.append("a URL names {tenant} but the provider has no tenant setting")
        if problems:
            raise ValueError(f"provider {self.name!r}: " + "; ".join(problems))

    @property
    def oidc_scopes(self) -> tuple[str, ...]:
        """The scopes an override of `scopes_env` must keep: without them there is no id_token or refresh token."""
        return tuple(scope for scope in self.scopes if scope in _OIDC_SCOPES)

    @property
    def speaker(self) -> str:
        """The provider's name as failure reasons say it: "Google says access was revoked"."""
        return self.classification.speaker
