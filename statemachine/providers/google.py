"""Google (Gmail): endpoints, scopes, wording and the error-body quirks of its token endpoint.

Refresh tokens are not rotated (a refresh answer may omit `refresh_token`: keep the one we have), and a
time-based grant says when it ends in `refresh_token_expires_in` (docs/errors.md).
"""

from __future__ import annotations

from statemachine.core.classify import ProviderRules
from statemachine.providers.spec import Endpoint, ProviderSpec

CLASSIFICATION = ProviderRules(
    speaker="Google",
    # `error_subtype` only picks the wording: a session-control policy wants a fresh sign-in (RAPT)
    detail_field="error_subtype",
    wording_by_detail={"invalid_rapt": "reauth_required", "rapt_required": "reauth_required"},
)

SPEC = ProviderSpec(
    name="google",
    label="Gmail",
    classification=CLASSIFICATION,
    token_url=Endpoint(env="GOOGLE_TOKEN_URL", default="https://oauth2.googleapis.com/token"),
    auth_url=Endpoint(env="GOOGLE_AUTH_URL", default="https://accounts.google.com/o/oauth2/v2/auth"),
    revoke_url=Endpoint(env="GOOGLE_REVOKE_URL", default="https://oauth2.googleapis.com/revoke"),
    client_id_env="GOOGLE_CLIENT_ID",
    client_secret_env="GOOGLE_CLIENT_SECRET",
    scopes=("openid", "email", "https://mail.google.com/"),
    subject_claims=("sub",),
    issuers=("https://accounts.google.com", "accounts.google.com"),  # Google documents both forms
    # offline access and a forced consent screen, so every consent returns a refresh token
    consent_params={
        "response_type": "code",
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
    },
)
