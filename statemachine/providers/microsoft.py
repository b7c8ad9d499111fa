"""Microsoft (Entra ID: Outlook and Microsoft 365): the identity platform v2.0 endpoints, scopes and wording, and the
error-body quirks of its token endpoint (oauth-errors.md §4).

Every refresh answers with a new refresh token (the cycle commits it before anything else; an answer without one
keeps the old). Accounts are named by the id_token's `tid` (tenant) and `oid` (object id), never by the email
claim, which Entra lets tenants set freely. The tenant (`common`, `organizations`, `consumers` or a tenant id)
is part of the endpoint URLs.
"""

from __future__ import annotations

from statemachine.core.classify import ProviderRules
from statemachine.providers.spec import Endpoint, ProviderSpec

_AUTHORITY = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"

CLASSIFICATION = ProviderRules(
    speaker="Microsoft",
    codes_field="error_codes",  # the numeric AADSTS codes; `error_description` is never read
    code_prefix="AADSTS",
    # rule 5: throttling and retryable failures that arrive inside a 4xx (50196 comes as invalid_grant)
    transient_codes=frozenset({50196, 90055, 90024, 50033, 50087, 90006, 90090, 90012, 70012, 90033, 50000}),
    config_codes=frozenset({9002313}),  # rule 6: a malformed refresh request sent as invalid_grant, our bug
    admin_codes=frozenset({50057, 53003, 530032, 53000, 53001}),  # disabled account, Conditional Access
    # the words per class of AADSTS code (oauth-errors.md §4.4); `error` alone already chose the class
    wording_by_code={
        50057: "account_disabled",
        50034: "account_not_found",
        **dict.fromkeys((50076, 50079, 50078, 50072, 50074), "mfa_required"),
        **dict.fromkeys((53003, 530032, 53000, 53001), "conditional_access"),
        70043: "signin_again",  # a sign-in frequency policy, not a revocation
        **dict.fromkeys((70008, 700082), "inactive_grant"),
        50173: "sessions_revoked",
        65001: "consent_required",
        50055: "user_password_expired",
        **dict.fromkeys((7000215, 7000222), "client_secret_expired"),  # config: operators are told, users are not
    },
    detail_field="suberror",
    admin_details=frozenset({"message_only", "additional_action"}),
    wording_by_detail={
        **{detail: detail for detail in ("consent_required", "user_password_expired", "interaction_required")},
        "basic_action": "signin_again",
        "token_expired": "signin_again",
    },
)

SPEC = ProviderSpec(
    name="microsoft",
    label="Outlook / Microsoft 365",
    classification=CLASSIFICATION,
    token_url=Endpoint(env="MICROSOFT_TOKEN_URL", default=f"{_AUTHORITY}/token"),
    auth_url=Endpoint(env="MICROSOFT_AUTH_URL", default=f"{_AUTHORITY}/authorize"),
    tenant=Endpoint(env="MICROSOFT_TENANT", default="common"),
    client_id_env="MICROSOFT_CLIENT_ID",
    client_secret_env="MICROSOFT_CLIENT_SECRET",
    # IMAP and SMTP, like Gmail's https://mail.google.com/: a token is for one resource (outlook.office.com), so a
    # Graph-based app sets MICROSOFT_SCOPES to Graph's mail scopes instead of adding them. `profile` brings `oid`.
    scopes=(
        "openid",
        "profile",
        "email",
        "offline_access",
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
    ),
    scopes_env="MICROSOFT_SCOPES",
    subject_claims=("tid", "oid"),
    email_identifies_account=False,
    issuers=("https://login.microsoftonline.com/{tid}/v2.0",),
    # `select_account` lets the owner pick the mailbox's account; consent is asked only when not yet given
    consent_params={"response_type": "code", "response_mode": "query", "prompt": "select_account"},
)
