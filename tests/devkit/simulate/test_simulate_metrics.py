"""The simulation's metrics and the naive replay, from hand-written records: every definition as a table.

Why: the README's figures come from these functions; a wrong definition would print a confident lie.
Times are simulated minutes. `cycles(1, "s0 t1 t2 s3")` reads: mailbox 1 refreshed at minute 0, failed
transiently at 1 and 2, succeeded at 3 (s/t/p/c: success, transient, permanent, config).
"""

from __future__ import annotations

import pytest

from devkit.simulate.metrics import (
    assign,
    duplicate_emails,
    email_delays,
    episodes,
    naive,
    ours,
    percentile,
    window_emails,
)
from devkit.simulate.model import PERMANENT_EMAIL, Change, Cycle, Email, Episode, Truth, Window

OUTCOMES = {"s": "success", "t": "transient", "p": "permanent", "c": "config"}
RETRY, FINAL = "token_refresh_retry", "token_refresh_final_failure"


def cycles(mailbox_id: int, script: str) -> list[Cycle]:
    return [Cycle(mailbox_id, float(step[1:]), OUTCOMES[step[0]]) for step in script.split()]


def disconnect(mailbox_id: int, at: float, event: str = "refresh_failed_permanent") -> Change:
    return Change(mailbox_id, at, event, "retrying", "disconnected")


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([7.0], 0.95, 7.0),
        ([4.0, 1.0, 3.0, 2.0], 0.5, 2.0),
        ([float(v) for v in range(1, 11)], 0.5, 5.0),
        ([float(v) for v in range(1, 11)], 0.95, 10.0),
        ([float(v) for v in range(1, 21)], 0.95, 19.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize(
    ("script", "changes", "expected"),
    [
        ("s0 s50", [], []),
        ("s0 t1 t2 s3", [], [Episode(1, 1.0, "transient", 3.0)]),
        ("t1 s2 c3 t4 s5", [], [Episode(1, 1.0, "transient", 2.0), Episode(1, 3.0, "config", 5.0)]),
        ("s0 p4 p5", [], [Episode(1, 4.0, "permanent")]),
        ("t1 t2", [Change(1, 3.0, "reconnected", "degraded", "healthy")], [Episode(1, 1.0, "transient", 3.0, True)]),
        ("s0", [Change(1, 3.0, "reconnected", "healthy", "healthy")], []),
    ],
)
def test_an_episode_runs_from_the_first_failed_cycle_to_a_success_or_a_reconnect(
    script: str, changes: list[Change], expected: list[Episode]
) -> None:
    assert episodes(cycles(1, script), changes) == expected


def test_naive_replay_disables_on_the_first_failed_cycle_and_stops_counting_there() -> None:
    record = [
        *cycles(1, "s0 s50 t60 s61 s110"),  # a blip: disabled at 60 although its grant is fine
        *cycles(2, "s10 s60 s110"),  # never failed
        *cycles(3, "s5 p55 p56"),  # revoked at 30: a true disconnect
        *cycles(4, "t20 p70"),  # failed at 20, revoked only at 40: a false disconnect
    ]
    truth = Truth(mailboxes=4, revoked={3: 30.0, 4: 40.0}, final_states={}, outage=Window(0, 1))
    result = naive(record, truth)
    assert result.cycles == 9
    assert result.success_rate == pytest.approx(6 / 9)
    assert (result.disabled, result.disabled_share, result.false_disconnects) == (3, 0.75, 2)
    assert (result.transient_episodes, result.recovered, result.recovery_rate) == (1, 0, 0.0)  # 4 turned permanent
    assert (result.revoked_failed, result.revoked_emailed, result.email_minutes_p50) == (1, 0, None)
    assert (result.emails, result.emails_per_episode) == (0, 0.0)
    assert (result.outage_emails, result.misconfig_emails) == (0, None)


def test_naive_replay_of_a_run_without_failures_disables_nobody() -> None:
    result = naive(cycles(1, "s0 s50"), Truth(mailboxes=2, revoked={}, final_states={}))
    assert (result.disabled, result.recovery_rate, result.emails_per_episode) == (0, None, None)


@pytest.mark.parametrize(
    ("revoked", "record", "emails", "expected"),
    [
        ({1: 10.0}, "s0 p12 p13", [Email(1, PERMANENT_EMAIL, 13.0, 14.5)], (1, [2.5])),  # until SMTP accepted it
        ({1: 10.0}, "s0 p12 p13", [Email(1, PERMANENT_EMAIL, 13.0)], (1, [])),  # written but never delivered
        ({1: 10.0}, "s0 p12", [], (1, [])),  # met invalid_grant, never told
        ({1: 10.0}, "s0", [], (0, [])),  # revoked but never refreshed since
        ({1: 10.0}, "p5 s6 p12 p13", [Email(1, PERMANENT_EMAIL, 6.5)], (1, [])),  # an older episode's email
    ],
)
def test_email_delay_runs_from_the_first_invalid_grant_after_the_revocation(
    revoked: dict[int, float], record: str, emails: list[Email], expected: tuple[int, list[float]]
) -> None:
    assert email_delays(cycles(1, record), emails, revoked, tolerance=0.01) == expected


def test_emails_are_counted_per_episode_and_kind() -> None:
    found = episodes(cycles(1, "t1 t2 t7 s20 t30 s31"))
    emails = [Email(1, RETRY, 7.0), Email(1, RETRY, 7.2), Email(1, FINAL, 8.0), Email(1, RETRY, 30.5)]
    pairs = assign(found, emails, tolerance=0.1)
    assert [episode.start if episode else None for _, episode in pairs] == [1.0, 1.0, 1.0, 30.0]
    assert duplicate_emails(pairs) == (4, 1)


def test_an_email_written_a_moment_before_its_cycle_row_still_belongs_to_the_episode() -> None:
    pairs = assign(episodes(cycles(1, "s0 p5 p6")), [Email(1, PERMANENT_EMAIL, 4.99)], tolerance=0.05)
    assert pairs[0][1] == Episode(1, 5.0, "permanent")


@pytest.mark.parametrize(
    ("window", "expected"),
    [(None, (None, None)), (Window(10, 20), (3, 1)), (Window(0, 5), (0, 0))],
)
def test_window_emails_tell_apart_those_the_window_caused(
    window: Window | None, expected: tuple[int | None, int | None]
) -> None:
    found = episodes([*cycles(1, "t5 t11 t16 s25"), *cycles(2, "t12 t13 t18 s30"), *cycles(3, "p12 p13")])
    emails = [Email(1, RETRY, 11.0), Email(2, RETRY, 18.0), Email(2, "reconnected", 30.0)]
    emails.append(Email(3, PERMANENT_EMAIL, 13.0))  # revoked at 11: rightly told, not the window's doing
    revoked = {3: 11.0}
    assert window_emails(assign(found, emails, tolerance=0.1), window, revoked) == expected


def test_ours_counts_recovery_disconnects_and_emails() -> None:
    record = [
        *cycles(1, "s0 t10 t11 t16 s31"),  # transient episode, recovered on its own
        *cycles(2, "s0 t10 t11 t16 t31 t61"),  # transient, disconnected at 61: a false disconnect
        *cycles(3, "s0 t100"),  # transient, still retrying at the end: unsettled
        *cycles(4, "s0 p40 p41"),  # revoked at 35, disconnected at 41
        *cycles(5, "s0 t20 p40 p41"),  # a transient episode that turned permanent: revoked at 30
    ]
    changes = [disconnect(2, 61.0, "refresh_failed_transient"), disconnect(4, 41.0), disconnect(5, 41.0)]
    emails = [Email(2, RETRY, 16.0), Email(2, FINAL, 61.0), Email(4, PERMANENT_EMAIL, 41.0, 42.0)]
    states = {1: "healthy", 2: "disconnected", 3: "retrying", 4: "disconnected", 5: "disconnected"}
    truth = Truth(mailboxes=5, revoked={4: 35.0, 5: 30.0}, final_states=states, outage=Window(50, 80))
    result = ours(record, changes, emails, truth, tolerance=0.1)
    assert result.cycles == 20
    assert result.success_rate == pytest.approx(6 / 20)
    assert (result.transient_episodes, result.recovered, result.unsettled, result.recovery_rate) == (3, 1, 1, 0.5)
    assert (result.disabled, result.disabled_share, result.false_disconnects) == (3, 0.6, 1)
    assert (result.revoked_failed, result.revoked_emailed, result.email_minutes_p50) == (2, 1, 2.0)
    assert (result.email_minutes_p95, result.email_minutes_max) == (2.0, 2.0)
    assert (result.episodes, result.emails, result.emails_per_episode, result.duplicate_emails) == (5, 3, 0.6, 0)
    assert (result.outage_emails, result.outage_emails_caused, result.misconfig_emails) == (1, 0, None)
