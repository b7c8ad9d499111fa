"""Microsoft (Entra ID, Microsoft 365): its wording and the error-body quirks of its token endpoint.

Not registered yet: there is no Microsoft adapter, sandbox or scope list, so `--provider microsoft` is
refused and the database does not accept it. What is here is ready for that work: the AADSTS overrides
of docs/errors.md (rules 5 to 7), which the generic classifier applies only to bodies classified
with these rules. Registering Microsoft means adding a `SPEC` here (docs/providers.md).
"""

from __future__ import annotations

from statemachine.core.classify import ProviderRules

NAME = "microsoft"
LABEL = "Microsoft 365"

CLASSIFICATION = ProviderRules(
    speaker="Microsoft",
    codes_field="error_codes",  # the numeric AADSTS codes; `error_description` is never read
    code_prefix="AADSTS",
    # rule 5: throttling and retryable failures that arrive inside a 4xx (50196 comes as invalid_grant)
    transient_codes=frozenset({50196, 90055, 90024, 50033, 50087, 90006, 90090, 90012, 70012, 90033, 50000}),
    config_codes=frozenset({9002313}),  # rule 6: a malformed refresh request sent as invalid_grant, our bug
    admin_codes=frozenset({50057, 53003, 530032, 53000, 53001}),  # disabled account, Conditional Access
    wording_by_code={50057: "account_disabled"},
    detail_field="suberror",
    admin_details=frozenset({"message_only", "additional_action"}),
    wording_by_detail={
        **{detail: detail for detail in ("consent_required", "user_password_expired", "interaction_required")},
        "basic_action": "interaction_required",
    },
)
