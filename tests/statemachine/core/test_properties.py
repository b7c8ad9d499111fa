"""Properties over generated inputs (hypothesis): the classifier on any response, the machine on any event sequence."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings, strategies as st

from statemachine.core.classify import GENERIC_RULES, ProviderRules, classify_response, parse_json_object
from statemachine.core.errors import Verdict
from statemachine.core.machine import InvalidEventError, Lifecycle, Occurrence, fire
from statemachine.core.policy import Policy
from statemachine.core.states import Event, FailureKind, State
from statemachine.providers.registry import PROVIDERS
from statemachine.store.outbox import dedupe_key

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
# Only these OAuth `error` codes may ever mark a mailbox's grant dead (oauth-errors.md §1 rule 7).
PERMANENT_CODES = {
    "invalid_grant", "interaction_required", "consent_required", "login_required", "admin_policy_enforced",
    "policy_enforced", "user_password_expired",
}  # fmt: skip
KNOWN_CODES = sorted(
    PERMANENT_CODES
    | {"invalid_client", "unauthorized_client", "invalid_request", "invalid_scope", "temporarily_unavailable"}
    | {"server_error", "unsupported_grant_type", "deleted_client"}
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
oauth_payloads = st.fixed_dictionaries(
    {"error": st.sampled_from(KNOWN_CODES) | st.text(max_size=30) | json_values},
    optional={
        "error_description": json_values,
        "error_codes": st.lists(st.integers(0, 10**7) | json_values, max_size=3) | json_values,
        "suberror": st.sampled_from(["message_only", "basic_action", "consent_required"]) | json_values,
        "error_subtype": st.sampled_from(["invalid_rapt", "rapt_required"]) | json_values,
        "access_token": st.text(max_size=10) | json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    oauth_payloads.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 200_000).map(lambda depth: b"[" * depth + b"]" * depth),  # deeper than the recursion limit
    st.integers(1, 100_000).map(lambda depth: b'{"error":' * depth),
    st.just(b'{"error": "invalid_grant", "x": "' + b"y" * 1_000_000 + b'"}'),
)
headers = st.dictionaries(
    st.sampled_from(["retry-after", "Retry-After", "date", "Date", "content-type"]) | st.text(max_size=10),
    st.text(max_size=40) | st.sampled_from(["120", "-5", "1e309", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999"]),
    max_size=4,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=st.sampled_from([GENERIC_RULES, *(spec.classification for spec in PROVIDERS)]),
    status=st.integers(0, 999),
    headers=headers,
    body=bodies,
)
def test_the_classifier_never_raises_and_never_says_permanent_without_a_permanent_code(
    rules: ProviderRules, status: int, headers: dict[str, str], body: bytes
) -> None:
    verdict = classify_response(rules, status, headers, body, now=NOW)
    if verdict is None:
        payload = parse_json_object(body)
        assert payload is not None
        assert 200 <= status <= 299
        assert payload.get("access_token")
        return
    assert verdict.reason
    assert verdict.code
    assert verdict.retry_after is None or 0 <= verdict.retry_after <= 3600
    if verdict.kind is FailureKind.PERMANENT:
        payload = parse_json_object(body)
        assert payload is not None
        assert payload.get("error") in PERMANENT_CODES  # an explicit code, never a bare status
        assert status not in (408, 429)
        assert not 500 <= status <= 599


VERDICTS = {
    Event.REFRESH_FAILED_TRANSIENT: Verdict(FailureKind.TRANSIENT, "http_503", "Google is unavailable."),
    Event.REFRESH_FAILED_PERMANENT: Verdict(FailureKind.PERMANENT, "invalid_grant", "Access was revoked."),
    Event.REFRESH_FAILED_CONFIG: Verdict(FailureKind.CONFIG, "invalid_client", "Our client was rejected."),
}
FAILURES = set(VERDICTS)
steps = st.lists(
    st.tuples(
        st.sampled_from([*Event, *sorted(FAILURES) * 3]),  # failures more often: long episodes climb the ladder
        st.booleans(),  # during a provider incident
        st.floats(0, 7200),  # seconds since the previous event
    ),
    max_size=60,
)
policies = st.builds(
    Policy,
    degrade_after=st.integers(1, 4),
    disconnect_after=st.integers(4, 6),
    degrade_min_age_seconds=st.sampled_from([0.0, 300.0]),
    disconnect_min_age_seconds=st.sampled_from([0.0, 1800.0]),
    confirm_permanent_seconds=st.sampled_from([0.0, 60.0]),
)


def apply(lifecycle: Lifecycle, event: Event, occurrence: Occurrence, policy: Policy) -> bool:
    """Fire the event; an event the state refuses must leave the lifecycle exactly as it was."""
    before = replace(lifecycle, records=list(lifecycle.records), emails=list(lifecycle.emails))
    try:
        fire(lifecycle, event, occurrence, policy)
    except InvalidEventError:
        assert lifecycle == before
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(policy=policies, sequence=steps)
def test_the_machine_keeps_its_invariants_under_any_event_sequence(
    policy: Policy, sequence: list[tuple[Event, bool, float]]
) -> None:
    lifecycle, at = Lifecycle(state=State.HEALTHY.value), NOW
    delivered: Counter[tuple[int, str]] = Counter()  # (episode, kind) of each outbox row the user receives
    keys: set[str] = set()
    for event, incident, wait in sequence:
        at += timedelta(seconds=wait)
        before_state, before_attempts, before_episode = lifecycle.state, lifecycle.attempt_count, lifecycle.episode
        episode_open = lifecycle.failed_at is not None
        occurrence = Occurrence(at=at, actor="property", verdict=VERDICTS.get(event), expires_in=3600,
                                incident=incident and event in FAILURES)  # fmt: skip
        sent = len(lifecycle.emails)
        if not apply(lifecycle, event, occurrence, policy):
            continue
        new_emails = lifecycle.emails[sent:]
        for kind in new_emails:  # the outbox keeps one row per dedupe key (an operator's retry may re-emit)
            key = dedupe_key(1, lifecycle.episode, kind)
            if key not in keys:
                keys.add(key)
                delivered[lifecycle.episode, kind.value] += 1
        if lifecycle.episode != before_episode:  # a new episode only once the last one ended (a success)
            assert (episode_open, lifecycle.episode) == (False, before_episode + 1)
        assert lifecycle.is_active == (lifecycle.state != State.DISCONNECTED)
        if lifecycle.state == State.HEALTHY:  # counters reset on success (and on a reconnect)
            assert (lifecycle.attempt_count, lifecycle.config_failure_count, lifecycle.failed_at) == (0, 0, None)
            assert (lifecycle.failure_kind, lifecycle.user_notified) == (None, False)
        if event is Event.REFRESH_FAILED_CONFIG:  # our client's fault: never the mailbox's ladder
            assert lifecycle.attempt_count == before_attempts
            assert lifecycle.state in (before_state, State.RETRYING)
        if occurrence.incident:  # the provider's outage: no escalation, no email
            assert new_emails == []
            assert lifecycle.state in (before_state, State.RETRYING)
        if event in FAILURES:
            assert lifecycle.failed_at is not None
    assert all(count == 1 for count in delivered.values())
