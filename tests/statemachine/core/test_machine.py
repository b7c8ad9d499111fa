"""The lifecycle machine, pure: every (state, event) pair, then the escalation rules over time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from statemachine.core.errors import Verdict
from statemachine.core.machine import InvalidEventError, Lifecycle, Occurrence, fire
from statemachine.core.policy import Policy
from statemachine.core.states import EmailKind, Event, FailureKind, State

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NO_AGES = Policy(degrade_min_age_seconds=0, disconnect_min_age_seconds=0)
VERDICTS = {
    Event.REFRESH_FAILED_TRANSIENT: Verdict(FailureKind.TRANSIENT, "http_503", "Google is unavailable."),
    Event.REFRESH_FAILED_PERMANENT: Verdict(FailureKind.PERMANENT, "invalid_grant", "Access was revoked."),
    Event.REFRESH_FAILED_CONFIG: Verdict(FailureKind.CONFIG, "invalid_client", "Our client was rejected."),
}


def lifecycle_in(state: State) -> Lifecycle:
    """A mailbox that reached `state` the usual way (transient failures for the failing states)."""
    failures = {State.HEALTHY: 0, State.RETRYING: 1, State.DEGRADED: 2, State.DISCONNECTED: 3}[state]
    return Lifecycle(
        state=state.value,
        attempt_count=failures,
        failed_at=T0 - timedelta(hours=1) if failures else None,
        failure_kind=FailureKind.TRANSIENT.value if failures else None,
        episode=1 if failures else 0,
    )


def occurrence(event: Event, at: datetime = T0, **kwargs: object) -> Occurrence:
    return Occurrence(at=at, actor="test", verdict=VERDICTS.get(event), expires_in=3600, **kwargs)  # type: ignore[arg-type]


H, R, D, X = State.HEALTHY, State.RETRYING, State.DEGRADED, State.DISCONNECTED
E = Event
EXPECTED = {
    H: {E.REFRESH_SUCCEEDED: H, E.REFRESH_FAILED_TRANSIENT: R, E.REFRESH_FAILED_PERMANENT: R,
        E.REFRESH_FAILED_CONFIG: R, E.RECONNECTED: H, E.RECONNECT_REJECTED: H, E.OPS_RETRY_NOW: H,
        E.OPS_DISCONNECT: X, E.REMOVED: X},
    R: {E.REFRESH_SUCCEEDED: H, E.REFRESH_FAILED_TRANSIENT: D, E.REFRESH_FAILED_PERMANENT: R,
        E.REFRESH_FAILED_CONFIG: R, E.RECONNECTED: H, E.RECONNECT_REJECTED: R, E.OPS_RETRY_NOW: R,
        E.OPS_DISCONNECT: X, E.REMOVED: X},
    D: {E.REFRESH_SUCCEEDED: H, E.REFRESH_FAILED_TRANSIENT: X, E.REFRESH_FAILED_PERMANENT: D,
        E.REFRESH_FAILED_CONFIG: D, E.RECONNECTED: H, E.RECONNECT_REJECTED: D, E.OPS_RETRY_NOW: D,
        E.OPS_DISCONNECT: X, E.REMOVED: X},
    X: {E.REFRESH_SUCCEEDED: H, E.REFRESH_FAILED_TRANSIENT: X, E.REFRESH_FAILED_PERMANENT: X,
        E.REFRESH_FAILED_CONFIG: X, E.RECONNECTED: H, E.RECONNECT_REJECTED: X, E.OPS_RETRY_NOW: R,
        E.OPS_DISCONNECT: None, E.REMOVED: X},
}  # fmt: skip
PAIRS = [(state, event, dest) for state, row in EXPECTED.items() for event, dest in row.items()]


def test_the_table_covers_every_state_and_event() -> None:
    assert {(s, e) for s, e, _ in PAIRS} == {(s, e) for s in State for e in Event}


@pytest.mark.parametrize("state", list(State))
def test_removal_disconnects_for_good_with_no_email_no_schedule_and_its_reason(state: State) -> None:
    lifecycle = fire(lifecycle_in(state), E.REMOVED, occurrence(E.REMOVED), NO_AGES)
    assert (lifecycle.state, lifecycle.next_refresh_at, lifecycle.emails) == (X, None, [])
    assert lifecycle.last_error == "removed: Removed by the host app."
    (record,) = lifecycle.records
    assert (record.event, record.reason) == ("removed", "Removed by the host app.")


@pytest.mark.parametrize(("state", "event", "dest"), PAIRS, ids=[f"{s}-{e}" for s, e, _ in PAIRS])
def test_every_state_and_event(state: State, event: Event, dest: State | None) -> None:
    lifecycle = lifecycle_in(state)
    if dest is None:
        with pytest.raises(InvalidEventError, match="not possible"):
            fire(lifecycle, event, occurrence(event), NO_AGES)
        assert lifecycle == lifecycle_in(state)
        return
    fire(lifecycle, event, occurrence(event), NO_AGES)
    assert lifecycle.state == dest
    assert lifecycle.is_active == (dest != X)
    routine = state == H and event == E.REFRESH_SUCCEEDED
    assert len(lifecycle.records) == (0 if routine else 1)
    if lifecycle.records:
        record = lifecycle.records[0]
        assert (record.event, record.from_state, record.to_state) == (event.value, state.value, dest.value)


def fail(lifecycle: Lifecycle, event: Event, at: datetime, policy: Policy = NO_AGES, **kwargs: object) -> Lifecycle:
    return fire(lifecycle, event, occurrence(event, at, **kwargs), policy)


def test_original_plan_ladder_three_transient_cycles_disconnect_with_one_email_per_rung() -> None:
    lifecycle = Lifecycle(state="healthy")
    states = [fail(lifecycle, E.REFRESH_FAILED_TRANSIENT, T0 + timedelta(minutes=i)).state for i in range(3)]
    assert states == ["retrying", "degraded", "disconnected"]
    assert lifecycle.emails == [EmailKind.TOKEN_REFRESH_RETRY, EmailKind.TOKEN_REFRESH_FINAL_FAILURE]
    assert lifecycle.attempt_count == 3
    assert lifecycle.failed_at == T0
    assert not lifecycle.is_active


def test_minimum_episode_age_keeps_a_short_blip_away_from_the_user() -> None:
    policy = Policy(degrade_min_age_seconds=300, disconnect_min_age_seconds=1800)
    lifecycle = Lifecycle(state="healthy")
    timeline = [(0, "retrying"), (60, "retrying"), (360, "degraded"), (1260, "degraded"), (1800, "disconnected")]
    for seconds, expected in timeline:
        fail(lifecycle, E.REFRESH_FAILED_TRANSIENT, T0 + timedelta(seconds=seconds), policy)
        assert lifecycle.state == expected, seconds
    assert lifecycle.emails == [EmailKind.TOKEN_REFRESH_RETRY, EmailKind.TOKEN_REFRESH_FINAL_FAILURE]


def test_permanent_error_is_confirmed_once_before_disconnecting() -> None:
    lifecycle = Lifecycle(state="healthy")
    fail(lifecycle, E.REFRESH_FAILED_PERMANENT, T0)
    assert (lifecycle.state, lifecycle.emails) == ("retrying", [])
    assert lifecycle.next_refresh_at == T0 + timedelta(seconds=60)
    fail(lifecycle, E.REFRESH_FAILED_PERMANENT, T0 + timedelta(seconds=61))
    assert lifecycle.state == "disconnected"
    assert lifecycle.emails == [EmailKind.TOKEN_REFRESH_PERMANENT_FAILURE]
    assert lifecycle.next_refresh_at is None  # a dead grant is not hammered


def test_a_transient_answer_to_the_confirming_cycle_keeps_the_mailbox_confirming() -> None:
    lifecycle = fail(Lifecycle(state="healthy"), E.REFRESH_FAILED_PERMANENT, T0, Policy())
    fail(lifecycle, E.REFRESH_FAILED_TRANSIENT, T0 + timedelta(seconds=60), Policy())
    assert (lifecycle.state, lifecycle.failure_kind) == ("retrying", "permanent")
    assert lifecycle.next_refresh_at == T0 + timedelta(seconds=120)  # tried again at the confirming pace
    fail(lifecycle, E.REFRESH_FAILED_PERMANENT, T0 + timedelta(seconds=120), Policy())
    assert lifecycle.state == "disconnected"  # confirmed now, not started over
    assert lifecycle.emails == [EmailKind.TOKEN_REFRESH_PERMANENT_FAILURE]


def test_a_mailbox_disconnected_by_transient_failures_while_confirming_is_reprobed() -> None:
    lifecycle = fail(Lifecycle(state="healthy"), E.REFRESH_FAILED_PERMANENT, T0, NO_AGES)
    for seconds in (60, 120):
        fail(lifecycle, E.REFRESH_FAILED_TRANSIENT, T0 + timedelta(seconds=seconds), NO_AGES)
    assert (lifecycle.state, lifecycle.failure_kind) == ("disconnected", "transient")
    assert lifecycle.next_refresh_at == T0 + timedelta(seconds=120 + NO_AGES.reprobe_seconds)
    assert lifecycle.emails == [EmailKind.TOKEN_REFRESH_RETRY, EmailKind.TOKEN_REFRESH_FINAL_FAILURE]


def test_a_config_failure_on_a_reprobe_keeps_the_disconnected_mailbox_reprobed() -> None:
    lifecycle = Lifecycle(state="healthy")
    for minutes in range(3):
        fail(lifecycle, E.REFRESH_FAILED_TRANSIENT, T0 + timedelta(minutes=minutes))
    reprobe = T0 + timedelta(minutes=2, seconds=NO_AGES.reprobe_seconds)
    fail(lifecycle, E.REFRESH_FAILED_CONFIG, reprobe)  # e.g. our client secret rotated meanwhile
    assert lifecycle.state == "disconnected"
    assert lifecycle.next_refresh_at == reprobe + timedelta(seconds=NO_AGES.reprobe_seconds)
    fail(lifecycle, E.REFRESH_SUCCEEDED, lifecycle.next_refresh_at)
    assert lifecycle.state == "healthy"  # recovered on its own once the configuration was fixed


def test_confirming_cycle_can_be_switched_off() -> None:
    lifecycle = fail(Lifecycle(state="healthy"), E.REFRESH_FAILED_PERMANENT, T0, Policy(confirm_permanent_seconds=0))
    assert lifecycle.state == "disconnected"
    assert lifecycle.emails == [EmailKind.TOKEN_REFRESH_PERMANENT_FAILURE]


def test_intermittent_invalid_grant_followed_by_success_recovers_quietly() -> None:
    lifecycle = fail(Lifecycle(state="healthy"), E.REFRESH_FAILED_PERMANENT, T0)
    fire(lifecycle, E.REFRESH_SUCCEEDED, occurrence(E.REFRESH_SUCCEEDED, T0 + timedelta(minutes=1)), NO_AGES)
    assert (lifecycle.state, lifecycle.emails, lifecycle.attempt_count, lifecycle.failed_at) == ("healthy", [], 0, None)


def test_config_errors_never_escalate_nor_spend_the_users_budget() -> None:
    lifecycle = Lifecycle(state="healthy")
    for minute in range(20):
        fail(lifecycle, E.REFRESH_FAILED_CONFIG, T0 + timedelta(minutes=minute))
    assert (lifecycle.state, lifecycle.emails, lifecycle.attempt_count) == ("retrying", [], 0)
    assert lifecycle.config_failure_count == 20
    assert len(lifecycle.records) == 20


def test_provider_incident_freezes_the_ladder_and_the_emails() -> None:
    lifecycle = Lifecycle(state="healthy")
    for minute in range(6):
        fail(lifecycle, E.REFRESH_FAILED_TRANSIENT, T0 + timedelta(minutes=minute), incident=True)
        fail(lifecycle, E.REFRESH_FAILED_PERMANENT, T0 + timedelta(minutes=minute, seconds=30), incident=True)
    assert (lifecycle.state, lifecycle.emails) == ("retrying", [])
    assert "provider incident" in lifecycle.records[-1].reason
    assert lifecycle.attempt_count == 0  # after the incident the ladder starts from the bottom
    last = T0 + timedelta(minutes=5, seconds=30)
    assert lifecycle.next_refresh_at == last + timedelta(seconds=NO_AGES.cycle_delays_seconds[-1])  # no hammering


def test_after_an_incident_one_more_failure_does_not_disconnect() -> None:
    lifecycle = fail(Lifecycle(state="healthy"), E.REFRESH_FAILED_TRANSIENT, T0)
    for minute in range(1, 60):
        fail(lifecycle, E.REFRESH_FAILED_TRANSIENT, T0 + timedelta(minutes=minute), incident=True)
    fail(lifecycle, E.REFRESH_FAILED_TRANSIENT, T0 + timedelta(minutes=61), Policy())
    assert (lifecycle.state, lifecycle.attempt_count, lifecycle.emails) == (
        "degraded",
        2,
        [EmailKind.TOKEN_REFRESH_RETRY],
    )


def test_recovery_after_an_email_sends_one_reconnected_email() -> None:
    lifecycle = Lifecycle(state="healthy")
    for minute in range(3):
        fail(lifecycle, E.REFRESH_FAILED_TRANSIENT, T0 + timedelta(minutes=minute))
    assert lifecycle.next_refresh_at == T0 + timedelta(minutes=2, seconds=NO_AGES.reprobe_seconds)
    fire(lifecycle, E.REFRESH_SUCCEEDED, occurrence(E.REFRESH_SUCCEEDED, T0 + timedelta(hours=6)), NO_AGES)
    assert lifecycle.state == "healthy"
    assert lifecycle.emails[-1] == EmailKind.RECONNECTED
    assert lifecycle.emails.count(EmailKind.RECONNECTED) == 1
    assert (lifecycle.attempt_count, lifecycle.failed_at, lifecycle.last_error, lifecycle.user_notified) == (
        0,
        None,
        None,
        False,
    )


def test_recovery_without_an_email_sends_none() -> None:
    lifecycle = fail(Lifecycle(state="healthy"), E.REFRESH_FAILED_TRANSIENT, T0)
    fire(lifecycle, E.REFRESH_SUCCEEDED, occurrence(E.REFRESH_SUCCEEDED, T0 + timedelta(minutes=1)), NO_AGES)
    assert lifecycle.emails == []


def test_a_new_failure_after_recovery_starts_a_new_episode() -> None:
    lifecycle = fail(Lifecycle(state="healthy"), E.REFRESH_FAILED_TRANSIENT, T0)
    fire(lifecycle, E.REFRESH_SUCCEEDED, occurrence(E.REFRESH_SUCCEEDED, T0 + timedelta(minutes=1)), NO_AGES)
    fail(lifecycle, E.REFRESH_FAILED_TRANSIENT, T0 + timedelta(hours=2))
    assert lifecycle.episode == 2
    assert lifecycle.failed_at == T0 + timedelta(hours=2)


def test_retry_after_is_a_floor_for_the_next_cycle() -> None:
    verdict = Verdict(FailureKind.TRANSIENT, "http_429", "Throttled.", retry_after=900)
    lifecycle = Lifecycle(state="healthy")
    fire(lifecycle, E.REFRESH_FAILED_TRANSIENT, Occurrence(at=T0, actor="t", verdict=verdict), NO_AGES)
    assert lifecycle.next_refresh_at == T0 + timedelta(seconds=900)


def test_operator_disconnect_is_not_reprobed_and_retry_now_is_immediate() -> None:
    lifecycle = fail(Lifecycle(state="healthy"), E.REFRESH_FAILED_TRANSIENT, T0)
    fire(lifecycle, E.OPS_DISCONNECT, Occurrence(at=T0, actor="operator:ann", note="abuse report"), NO_AGES)
    assert (lifecycle.state, lifecycle.next_refresh_at, lifecycle.emails) == ("disconnected", None, [])
    assert lifecycle.records[-1].actor == "operator:ann"
    assert lifecycle.records[-1].reason == "abuse report"
    later = T0 + timedelta(minutes=5)
    fire(lifecycle, E.OPS_RETRY_NOW, Occurrence(at=later, actor="operator:ann"), NO_AGES)
    assert (lifecycle.state, lifecycle.next_refresh_at) == ("retrying", later)


def test_only_recovery_events_leave_disconnected() -> None:
    leaving = set()
    for event in Event:
        lifecycle = lifecycle_in(X)
        try:
            fire(lifecycle, event, occurrence(event), NO_AGES)
        except InvalidEventError:
            continue
        if lifecycle.state != X:
            leaving.add(event)
    assert leaving == {E.REFRESH_SUCCEEDED, E.RECONNECTED, E.OPS_RETRY_NOW}


def test_healthy_refresh_schedules_before_expiry_with_spread() -> None:
    early = fire(Lifecycle(state="healthy"), E.REFRESH_SUCCEEDED, occurrence(E.REFRESH_SUCCEEDED), NO_AGES)
    late = fire(Lifecycle(state="healthy"), E.REFRESH_SUCCEEDED, occurrence(E.REFRESH_SUCCEEDED, jitter=0.99), NO_AGES)
    assert early.next_refresh_at is not None
    assert late.next_refresh_at is not None
    assert T0 < late.next_refresh_at < early.next_refresh_at < T0 + timedelta(seconds=3600)
