"""The incident decision as a table: counts of a provider's recent cycles in, open/close out."""

from __future__ import annotations

import pytest

from statemachine.core.incident_rules import (
    Cause,
    CodeCount,
    IncidentThresholds,
    WindowCounts,
    holds,
    should_close,
    should_open,
)

RULES = IncidentThresholds(window_seconds=600, failure_ratio=0.5, min_mailboxes=5)


def counts(successes: int = 0, *codes: tuple[str, str, int, int]) -> WindowCounts:
    items = tuple(CodeCount(kind, code, cycles, boxes) for kind, code, cycles, boxes in codes)
    transient = [c for c in items if c.kind == "transient"]
    return WindowCounts(
        cycles=successes + sum(c.cycles for c in items),
        successes=successes,
        transient_cycles=sum(c.cycles for c in transient),
        # distinct across codes: the table's rows never share a mailbox between transient codes
        transient_mailboxes=sum(c.mailboxes for c in transient),
        codes=items,
    )


@pytest.mark.parametrize(
    ("window", "code", "cause_has"),
    [
        # an outage: most cycles fail transiently, across many mailboxes
        (counts(2, ("transient", "http_503", 8, 8)), None, "provider outage"),
        # several transient codes add up
        (counts(4, ("transient", "http_503", 3, 3), ("transient", "connect_timeout", 3, 3)), None, "mostly"),
        # a rotated client secret: every mailbox gets invalid_client
        (counts(0, ("config", "invalid_client", 6, 6)), "invalid_client", "client secret"),
        # an app left in Testing: invalid_grant for everybody at once
        (counts(1, ("permanent", "invalid_grant", 9, 7)), "invalid_grant", "Testing"),
        # an unknown config code still names itself
        (counts(0, ("config", "token_undecryptable", 5, 5)), "token_undecryptable", "our configuration"),
        # config is the more actionable cause when both cross
        (counts(0, ("config", "invalid_client", 6, 6), ("permanent", "invalid_grant", 6, 6)), "invalid_client", ""),
    ],
)
def test_opens(window: WindowCounts, code: str | None, cause_has: str) -> None:
    opening = should_open("google", window, RULES)
    assert opening is not None
    assert opening.code == code
    assert opening.cause.startswith("google: ")
    assert cause_has in opening.cause
    assert opening.mailboxes >= RULES.min_mailboxes


@pytest.mark.parametrize(
    "window",
    [
        counts(0),  # nothing happened
        counts(0, ("transient", "http_503", 40, 4)),  # one unlucky mailbox set, below the distinct-mailbox floor
        counts(10, ("transient", "http_503", 9, 9)),  # many mailboxes, but under half of the cycles
        counts(100, ("permanent", "invalid_grant", 6, 6)),  # ordinary churn: users revoking on a busy provider
        counts(2, ("permanent", "invalid_grant", 3, 3), ("permanent", "invalid_rapt", 3, 3)),  # no single code
        counts(0, ("config", "invalid_client", 4, 4)),  # too few mailboxes to say it is more than one
    ],
)
def test_does_not_open(window: WindowCounts) -> None:
    assert should_open("google", window, RULES) is None


def test_a_cause_with_an_open_incident_lets_the_next_cause_open_its_own() -> None:
    storm = counts(0, ("permanent", "invalid_grant", 6, 6), ("transient", "http_503", 6, 6))
    assert should_open("google", storm, RULES, frozenset()).code == "invalid_grant"
    during_outage = should_open("google", storm, RULES, frozenset({Cause("transient")}))
    assert (during_outage.kind, during_outage.code) == ("permanent", "invalid_grant")
    assert should_open("google", storm, RULES, frozenset({Cause("transient"), during_outage.about})) is None
    outage = should_open("google", storm, RULES, frozenset({Cause("permanent", "invalid_grant")}))
    assert (outage.kind, outage.code) == ("transient", None)


def test_an_open_config_incident_keeps_a_second_config_code_from_opening_another() -> None:
    # an invalid_client incident already holds every config failure: a second incident would hold the same ones
    window = counts(0, ("config", "unauthorized_client", 6, 6))
    assert should_open("google", window, RULES, frozenset({Cause("config", "invalid_client")})) is None
    assert should_open("google", window, RULES, frozenset({Cause("transient")})) is not None


@pytest.mark.parametrize(
    ("incident", "kind", "code", "held"),
    [
        (Cause("transient"), "transient", "http_503", True),  # the outage's own failures, whatever the code
        (Cause("transient"), "transient", "connect_timeout", True),
        (Cause("transient"), "permanent", "invalid_grant", False),  # a revoked grant is the user's own
        (Cause("transient"), "config", "invalid_client", False),
        (Cause("config", "invalid_client"), "config", "unauthorized_client", True),  # any config failure is ours
        (Cause("config", "invalid_client"), "transient", "http_503", False),
        (Cause("permanent", "invalid_grant"), "permanent", "invalid_grant", True),  # an app left in Testing
        (Cause("permanent", "invalid_grant"), "permanent", "consent_required", False),
        (Cause("permanent", "invalid_grant"), "transient", "http_503", False),
    ],
)
def test_an_incident_holds_only_what_it_is_about(incident: Cause, kind: str, code: str, held: bool) -> None:
    assert holds(incident, kind, code) is held


def test_ratio_and_mailbox_thresholds_are_inclusive() -> None:
    assert should_open("google", counts(5, ("transient", "http_503", 5, 5)), RULES) is not None


OUTAGE, SECRET, TESTING = Cause("transient"), Cause("config", "invalid_client"), Cause("permanent", "invalid_grant")


@pytest.mark.parametrize(
    ("window", "cause", "closes"),
    [
        (counts(6, ("transient", "http_503", 4, 4)), OUTAGE, True),  # failures back under half, with successes
        (counts(5, ("transient", "http_503", 5, 5)), OUTAGE, False),  # exactly at the threshold: still failing
        (counts(0, ("transient", "http_503", 3, 3)), OUTAGE, False),  # no success yet
        (counts(0), OUTAGE, False),  # quiet: nothing is known about the provider yet
        (counts(1, ("config", "invalid_client", 9, 9)), SECRET, False),  # the secret is still wrong
        # another cause's failures do not keep an incident open
        (counts(1, ("permanent", "invalid_grant", 9, 9), ("transient", "http_503", 1, 1)), OUTAGE, True),
        (counts(1, ("permanent", "invalid_grant", 9, 9), ("transient", "http_503", 1, 1)), TESTING, False),
        (counts(4, ("permanent", "invalid_grant", 1, 1), ("transient", "http_503", 5, 5)), TESTING, True),
    ],
)
def test_closes(window: WindowCounts, cause: Cause, closes: bool) -> None:
    assert should_close(window, RULES, cause) is closes
