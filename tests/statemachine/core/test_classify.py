"""The classifier against every shared sample response, plus edge cases the samples do not cover."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from statemachine.core.classify import (
    GENERIC_RULES,
    MAX_RETRY_AFTER_SECONDS,
    TRANSPORT_KINDS,
    ProviderRules,
    classify_response,
    classify_transport,
    parse_json_object,
    parse_retry_after,
)
from statemachine.core.errors import Verdict
from statemachine.core.states import FailureKind
from statemachine.providers import google, microsoft

CASES_FILE = Path(__file__).resolve().parents[4] / "shared" / "oauth-error-cases.json"
CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text())
NOW = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
JSON = {"Content-Type": "application/json; charset=utf-8"}
T, P, C = FailureKind.TRANSIENT, FailureKind.PERMANENT, FailureKind.CONFIG
# the shared cases name a provider; "generic" rows need nothing beyond the generic rules
RULES: dict[str, ProviderRules] = {
    "google": google.CLASSIFICATION,
    "microsoft": microsoft.CLASSIFICATION,
    "generic": GENERIC_RULES,
}


def _classify(status: int, body: Any, headers: dict[str, str] | None = None, provider: str = "google") -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify_response(RULES[provider], status, headers if headers is not None else JSON, raw, now=NOW)


def test_the_shared_cases_are_all_here() -> None:
    assert len(CASES) == 51
    assert {case["provider"] for case in CASES} == {"google", "microsoft", "generic"}


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_shared_case(case: dict[str, Any]) -> None:
    verdict: Verdict | None
    if case.get("transport"):
        verdict = classify_transport(case["transport"])
    else:
        body = case["body"].encode()
        verdict = classify_response(RULES[case["provider"]], case["status"], case["headers"], body, now=NOW)
    assert verdict is not None
    assert verdict.kind == case["expected"]
    assert verdict.retry_after == case["retry_after_seconds"]


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        pytest.param(503, {"error": "invalid_grant"}, T, "invalid_grant", id="503-invalid-grant-is-transient"),
        pytest.param(200, {"error": "server_error"}, T, "server_error", id="200-server-error"),
        pytest.param(200, {"error": "invalid_grant", "access_token": "at"}, P, "invalid_grant", id="200-invalid-grant"),
        pytest.param(302, b"<html>302 Moved</html>", T, "http_302", id="302-sorry-redirect"),
        pytest.param(407, b"Proxy Authentication Required", C, "http_407", id="407-proxy"),
        pytest.param(404, b"<html><title>Not Found</title></html>", T, "http_404", id="404-html"),
        pytest.param(401, b"<html>Unauthorized</html>", C, "http_401_empty", id="401-html"),
        pytest.param(401, {"message": "no"}, T, "http_401", id="401-json-without-error"),
        pytest.param(400, {"error": "Invalid Grant"}, T, "unknown_error", id="error-not-a-plain-code"),
        pytest.param(400, {"error": "x" * 65}, T, "unknown_error", id="error-code-too-long"),
        pytest.param(400, {"error": 42}, T, "http_400", id="error-not-a-string-400"),
        pytest.param(200, {"error": ""}, T, "missing_access_token", id="empty-error-no-token"),
        pytest.param(200, {"access_token": ""}, T, "missing_access_token", id="empty-access-token"),
        pytest.param(200, {"access_token": 12}, T, "missing_access_token", id="access-token-not-a-string"),
        pytest.param(200, ["access_token", "at"], T, "non_json_body", id="json-array"),
        pytest.param(200, b"\xff\xfe{\x00\x80not utf-8", T, "non_json_body", id="non-utf8-bytes"),
        pytest.param(200, b"[" * 100_000 + b"]" * 100_000, T, "non_json_body", id="deeply-nested"),
        pytest.param(400, b"{" * 50_000, T, "http_400", id="truncated-deep-json"),
        pytest.param(
            200, b'{"access_token": "at", "expires_in": ' + b"9" * 5000 + b"}", T, "non_json_body", id="huge-int"
        ),
        pytest.param(200, b"\x00" * 70_000, T, "non_json_body", id="binary-garbage"),
        pytest.param(418, {"error": "temporarily_unavailable"}, T, "temporarily_unavailable", id="odd-status-rule-4"),
        pytest.param(600, b"", T, "http_600", id="status-out-of-range"),
    ],
)
def test_responses_outside_the_shared_cases(status: int, body: Any, kind: FailureKind, code: str) -> None:
    verdict = _classify(status, body)
    assert verdict is not None
    assert (verdict.kind, verdict.code) == (kind, code)


@pytest.mark.parametrize(
    "body",
    [
        {"access_token": "ya29.x", "expires_in": 3599},
        {"access_token": "ya29.x", "error": 5},
        {"access_token": "ya29.x", "error": None, "refresh_token": "1//rt"},
    ],
    ids=["plain", "error-number-is-no-error", "error-null"],
)
def test_usable_success_is_none(body: dict[str, Any]) -> None:
    assert _classify(200, body) is None
    assert _classify(201, body) is None


@pytest.mark.parametrize(
    ("provider", "body", "admin", "wording"),
    [
        ("microsoft", {"error": "admin_policy_enforced"}, True, "organisation policy"),
        ("microsoft", {"error": "policy_enforced"}, True, "Advanced Protection"),
        ("google", {"error": "admin_policy_enforced"}, True, "organisation policy"),
        ("microsoft", {"error": "invalid_grant", "error_codes": [50057]}, True, "disabled"),
        ("microsoft", {"error": "invalid_grant", "error_codes": [53003]}, True, "administrator"),
        ("microsoft", {"error": "interaction_required", "suberror": "message_only"}, True, "admin"),
        ("microsoft", {"error": "interaction_required", "suberror": "additional_action"}, True, "admin"),
        ("microsoft", {"error": "invalid_grant", "suberror": "consent_required"}, False, "permission"),
        ("google", {"error": "invalid_grant", "error_subtype": "invalid_rapt"}, False, "re-authenticate"),
        ("microsoft", {"error": "invalid_grant", "suberror": "basic_action"}, False, "sign in again"),
        ("microsoft", {"error": "user_password_expired"}, False, "password"),
        ("microsoft", {"error": "login_required"}, False, "sign in again"),
        ("microsoft", {"error": "consent_required"}, False, "permission"),
        ("microsoft", {"error": "invalid_grant", "suberror": "bad_token"}, False, "revoked"),
        # each provider reads only its own fields: another provider's field is an unknown key, ignored
        ("google", {"error": "invalid_grant", "suberror": "message_only", "error_codes": [50057]}, False, "revoked"),
        ("microsoft", {"error": "invalid_grant", "error_subtype": "invalid_rapt"}, False, "revoked"),
        ("generic", {"error": "invalid_grant", "suberror": "basic_action", "error_subtype": "rapt_required"}, False,
         "revoked"),
    ],
)  # fmt: skip
def test_permanent_wording_and_admin_flag(provider: str, body: dict[str, Any], admin: bool, wording: str) -> None:
    verdict = _classify(400, body, provider=provider)
    assert verdict is not None
    assert verdict.kind == P
    assert verdict.admin is admin
    assert wording in verdict.reason


ERROR_CODES_OVERRIDES = [
    ({"error": "invalid_grant", "error_codes": [50196]}, T),  # loop detection is throttling
    ({"error": "invalid_grant", "error_codes": [1, 90055]}, T),
    ({"error": "invalid_client", "error_codes": [90024]}, T),  # rule 5 comes before rule 6
    ({"error": "invalid_grant", "error_codes": [9002313]}, C),
    ({"error": "invalid_grant", "error_codes": ["50196", True, None]}, P),  # not numbers: ignored
    ({"error": "invalid_grant", "error_codes": "50196"}, P),
]


@pytest.mark.parametrize(("body", "kind"), ERROR_CODES_OVERRIDES)
def test_error_codes_overrides_are_microsofts(body: dict[str, Any], kind: FailureKind) -> None:
    verdict = _classify(400, body, provider="microsoft")
    assert verdict is not None
    assert verdict.kind == kind


@pytest.mark.parametrize("provider", ["google", "generic"])
@pytest.mark.parametrize(("body", "kind"), ERROR_CODES_OVERRIDES)
def test_other_providers_classify_by_error_alone(provider: str, body: dict[str, Any], kind: FailureKind) -> None:
    """The AADSTS numbers mean nothing elsewhere: the generic rules decide from `error`."""
    verdict = _classify(400, body, provider=provider)
    assert verdict is not None
    assert verdict.kind == (C if body["error"] == "invalid_client" else P)


def test_microsoft_code_carries_the_first_aadsts_number_from_error_codes() -> None:
    body = {"error": "invalid_grant", "error_description": "AADSTS123: misleading text", "error_codes": [700082, 50173]}
    assert _classify(400, body, provider="microsoft").code == "invalid_grant/AADSTS700082"
    assert _classify(400, body, provider="google").code == "invalid_grant"
    assert _classify(
        400, {"error": "invalid_grant", "error_description": "AADSTS70008"}, provider="microsoft"
    ).code == ("invalid_grant")


def test_no_body_text_reaches_the_verdict() -> None:
    secret = "1//SECRET-RT"
    for body in (
        {"error": "invalid_grant", "error_description": f"Token {secret} has been expired or revoked."},
        {"error": f"bad {secret}", "error_description": secret, "suberror": secret, "error_subtype": secret},
        {"error": secret, "error_codes": [secret]},
    ):
        for status in (200, 400, 401, 503):
            verdict = _classify(status, body, headers={**JSON, "X-Echo": secret})
            assert verdict is not None
            assert secret not in verdict.code + verdict.reason
            assert "SECRET" not in verdict.reason
    assert "Token" not in _classify(400, {"error": "invalid_grant", "error_description": "Token x"}).reason


def test_html_body_is_never_copied() -> None:
    verdict = _classify(403, b"<TITLE>User Rate Limit Exceeded</TITLE>", headers={"Content-Type": "text/html"})
    assert verdict is not None
    assert "Rate Limit Exceeded" not in verdict.reason
    assert verdict.reason == ("Google refused the token request without an OAuth error code (HTTP 403); we will retry.")


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"codes_field": "error_codes", "wording_by_code": {1: "no_such_wording"}}, "no reason text"),
        ({"transient_codes": frozenset({1})}, "codes_field"),
        ({"wording_by_detail": {"x": "invalid_grant"}}, "detail_field"),
    ],
)
def test_provider_rules_are_checked_when_declared(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ProviderRules(**overrides)


def test_generic_rules_speak_of_the_provider() -> None:
    verdict = _classify(400, {"error": "invalid_grant"}, provider="generic")
    assert verdict.reason.startswith("The provider says access was revoked")


def test_transport_kinds() -> None:
    assert len(TRANSPORT_KINDS) == 10
    for kind in TRANSPORT_KINDS:
        verdict = classify_transport(kind)
        assert (verdict.kind, verdict.code, verdict.retry_after) == (T, kind, None)
        assert verdict.reason.endswith("we will retry.")
    with pytest.raises(ValueError, match="unknown transport failure kind"):
        classify_transport("dns_is_down")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "30"}, 30.0),
        ({"retry-after": "30"}, 30.0),
        ({"RETRY-AFTER": " 7 "}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "86400"}, MAX_RETRY_AFTER_SECONDS),
        ({"Retry-After": "9" * 400}, MAX_RETRY_AFTER_SECONDS),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "1e3"}, None),
        ({"Retry-After": "30, 60"}, None),
        ({"Retry-After": "Sat, 28 Nov 2026 14:02:00 GMT"}, 120.0),
        ({"Retry-After": "Sat, 28 Nov 2026 13:00:00 GMT"}, 0.0),
        ({"Retry-After": "Sun, 29 Nov 2026 14:00:00 GMT"}, MAX_RETRY_AFTER_SECONDS),
        ({"Retry-After": "Sat, 28 Nov 2026 14:02:00 -0000"}, 120.0),
        ({"Retry-After": "Sat, 99 Nov 2026 14:02:00 GMT"}, None),
        # an HTTP-date counts from the server's Date, not from our clock
        ({"Date": "Tue, 14 Oct 2025 09:30:00 GMT", "Retry-After": "Tue, 14 Oct 2025 09:31:30 GMT"}, 90.0),
        ({"date": "garbage", "Retry-After": "Sat, 28 Nov 2026 14:00:45 GMT"}, 45.0),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, NOW) == expected


def test_parse_retry_after_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_retry_after({"Retry-After": "5"}, NOW.replace(tzinfo=None))


def test_retry_after_is_kept_on_the_verdict_and_local_clock_is_the_fallback() -> None:
    later = (NOW + timedelta(seconds=600)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    verdict = _classify(503, b"", headers={"Retry-After": later})
    assert verdict is not None
    assert verdict.retry_after == 600.0


def test_parse_json_object() -> None:
    assert parse_json_object(b'{"a": 1}') == {"a": 1}
    assert parse_json_object(b"\xef\xbb\xbf{}") == {}
    for body in (b"", b"null", b"[]", b'"x"', b"{", b"\xff", b"[" * 100_000):
        assert parse_json_object(body) is None


def _aadsts(error: str, code: int, suberror: str | None = None) -> dict[str, Any]:
    """A body shaped like Microsoft's (oauth-errors.md §4.1); its description is never read."""
    body: dict[str, Any] = {
        "error": error,
        "error_description": f"AADSTS{code}: revoked. Trace ID: 0 Correlation ID: 1 Timestamp: 2026-11-28 14:00:00Z",
        "error_codes": [code],
        "timestamp": "2026-11-28 14:00:00Z",
        "trace_id": "0000",
        "correlation_id": "1111",
    }
    return body | ({"suberror": suberror} if suberror else {})


@pytest.mark.parametrize(
    ("body", "kind", "admin", "words"),
    [
        (_aadsts("interaction_required", 50076), P, False, "multi-factor"),
        (_aadsts("invalid_grant", 50079, "basic_action"), P, False, "multi-factor"),
        (_aadsts("interaction_required", 70043), P, False, "your organisation requires you to sign in again"),
        (_aadsts("invalid_grant", 70043, "token_expired"), P, False, "your organisation requires you to sign in again"),
        (_aadsts("invalid_grant", 50089, "basic_action"), P, False, "your organisation requires you to sign in again"),
        (_aadsts("interaction_required", 53003, "message_only"), P, True, "Conditional Access"),
        (_aadsts("invalid_grant", 530032), P, True, "Conditional Access"),
        (_aadsts("invalid_grant", 65001, "consent_required"), P, False, "permission"),
        (_aadsts("invalid_grant", 700082, "bad_token"), P, False, "without use"),
        (_aadsts("invalid_grant", 50173), P, False, "security change"),
        (_aadsts("invalid_grant", 50034), P, False, "no longer exists"),
        (_aadsts("invalid_grant", 50057), P, True, "disabled"),
        (_aadsts("invalid_grant", 70000, "bad_token"), P, False, "revoked"),
        (_aadsts("invalid_client", 7000215), C, False, "client secret"),
        (_aadsts("invalid_client", 7000222), C, False, "client secret"),
        (_aadsts("invalid_grant", 9002313), C, False, "malformed"),
        (_aadsts("invalid_grant", 50196), T, False, "throttling"),
        (_aadsts("interaction_required", 50196), T, False, "throttling"),  # error first, then the narrow override
        (_aadsts("some_new_error", 12345, "basic_action"), T, False, "do not recognise"),
    ],
    ids=lambda value: value["error_description"][:13] + "/" + value["error"] if isinstance(value, dict) else None,
)
def test_microsoft_words_per_class_of_aadsts_error(
    body: dict[str, Any], kind: FailureKind, admin: bool, words: str
) -> None:
    verdict = _classify(401 if body["error"] == "invalid_client" else 400, body, provider="microsoft")
    assert (verdict.kind, verdict.admin) == (kind, admin)
    assert words.lower() in verdict.reason.lower()
    assert "Microsoft" in verdict.reason
    if kind is P and "revoked" not in words:
        assert "revoked" not in verdict.reason  # "your organisation requires you to sign in again" is not revocation
    assert "Trace ID" not in verdict.reason  # our words, never the description
