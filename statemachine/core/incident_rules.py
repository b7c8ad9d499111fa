"""When a provider's failures are the provider's (or our configuration's) fault, not the users': pure rules.

Counts of the recent cycle outcomes of one provider come in, a decision comes out, so every threshold
is a table test. Three ways to open an incident, tried in this order (the most actionable first):
one config code (ours: a rotated client secret) hitting many mailboxes, one permanent code hitting
many mailboxes at once (a Google app left in "Testing" expires every refresh token after 7 days),
and transient failures (an outage). Each needs both the failure share of the window's cycles and
the number of distinct mailboxes to cross the thresholds, so one user revoking access, or a blip
on a quiet provider, never opens one.

An incident holds only the failures it is about (`holds`): a transient one holds transient failures,
a config one config failures, a permanent one its own code. A lone `invalid_grant` during an outage
of 503s is that user's own and follows its normal schedule. So a provider may have one open incident
per cause at once: an `invalid_grant` storm can begin while an outage is open.
"""

from __future__ import annotations

from dataclasses import dataclass

TRANSIENT, PERMANENT, CONFIG, SUCCESS = "transient", "permanent", "config", "success"


@dataclass(frozen=True)
class IncidentThresholds:
    window_seconds: float = 600.0
    failure_ratio: float = 0.5
    min_mailboxes: int = 5
    recovery_spread_seconds: float = 60.0


@dataclass(frozen=True)
class CodeCount:
    """Cycles of one outcome kind and code in the window, and how many distinct mailboxes they hit."""

    kind: str
    code: str | None
    cycles: int
    mailboxes: int


@dataclass(frozen=True)
class WindowCounts:
    cycles: int
    successes: int
    transient_cycles: int
    transient_mailboxes: int
    codes: tuple[CodeCount, ...] = ()

    @property
    def failures(self) -> int:
        return self.cycles - self.successes

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.cycles if self.cycles else 0.0


@dataclass(frozen=True)
class Cause:
    """What an incident is about: its failure kind, and its code (None for transient: any code)."""

    kind: str
    code: str | None = None


@dataclass(frozen=True)
class Opening:
    """Why to open an incident: `cause` is for operators, in plain words."""

    cause: str
    code: str | None
    failure_ratio: float
    mailboxes: int
    kind: str = TRANSIENT

    @property
    def about(self) -> Cause:
        return Cause(self.kind, self.code)


def holds(incident: Cause, kind: str, code: str | None) -> bool:
    """Whether an open incident about `incident` holds back a failure of `kind` and `code`.

    Transient and config incidents hold every failure of their kind (an outage's codes vary; any
    config failure is ours); a permanent one only its own code, so other users' revoked grants are told.
    """
    if incident.kind != kind:
        return False
    return kind != PERMANENT or incident.code == code


def _held(open_causes: frozenset[Cause], kind: str, code: str | None) -> bool:
    return any(holds(cause, kind, code) for cause in open_causes)


def _share(cycles: int, counts: WindowCounts) -> float:
    return cycles / counts.cycles if counts.cycles else 0.0


def _crosses(cycles: int, mailboxes: int, counts: WindowCounts, rules: IncidentThresholds) -> bool:
    return mailboxes >= rules.min_mailboxes and _share(cycles, counts) >= rules.failure_ratio


def _window_words(counts: WindowCounts, rules: IncidentThresholds, cycles: int) -> str:
    minutes = rules.window_seconds / 60
    span = f"{minutes:g} min" if minutes >= 1 else f"{rules.window_seconds:g} s"
    return f"{_share(cycles, counts):.0%} of {counts.cycles} refresh cycles in the last {span}"


_CODE_CAUSES = {
    "invalid_client": "our OAuth client was rejected: the client secret was probably rotated or is wrong "
    "(check {secret_setting})",
    "unauthorized_client": "our OAuth client is not allowed this grant: check the client's configuration",
    "invalid_grant": "refresh tokens are rejected en masse: the app is probably still in 'Testing' status "
    "(tokens expire after 7 days) or its client was reset; users are not at fault",
}


def _code_cause(
    item: CodeCount, provider: str, counts: WindowCounts, rules: IncidentThresholds, secret_setting: str
) -> str:
    default = (
        "our configuration was rejected" if item.kind == CONFIG else "a provider- or app-level change, not the users"
    )
    why = _CODE_CAUSES.get(item.code or "", default).format(secret_setting=secret_setting)
    return (
        f"{provider}: {item.code} for {item.mailboxes} mailboxes ({_window_words(counts, rules, item.cycles)}): {why}"
    )


def _transient_cause(provider: str, counts: WindowCounts, rules: IncidentThresholds) -> str:
    transient = sorted((c for c in counts.codes if c.kind == TRANSIENT), key=lambda c: (-c.cycles, c.code or ""))
    example = f", mostly {transient[0].code}" if transient else ""
    return (
        f"{provider}: the token endpoint fails for {counts.transient_mailboxes} mailboxes "
        f"({_window_words(counts, rules, counts.transient_cycles)}{example}): a provider outage or a network problem"
    )


def should_open(
    provider: str,
    counts: WindowCounts,
    rules: IncidentThresholds,
    already_open: frozenset[Cause] = frozenset(),
    *,
    secret_setting: str | None = None,
) -> Opening | None:
    """The incident these counts call for, or None. Order: config code, permanent code, transient failures.

    Failures an incident in `already_open` holds are passed over (a config incident holds every config code),
    so the next cause may open its own but no two open incidents hold the same failures.
    `secret_setting` names where operators set the provider's client secret (its environment variable).
    """
    secret_setting = secret_setting or "the provider's client secret setting"
    for kind in (CONFIG, PERMANENT):
        candidates = sorted((c for c in counts.codes if c.kind == kind), key=lambda c: (-c.mailboxes, c.code or ""))
        for item in candidates:
            if not _held(already_open, kind, item.code) and _crosses(item.cycles, item.mailboxes, counts, rules):
                cause = _code_cause(item, provider, counts, rules, secret_setting)
                return Opening(cause, item.code, _share(item.cycles, counts), item.mailboxes, kind)
    transient = not _held(already_open, TRANSIENT, None)
    if transient and _crosses(counts.transient_cycles, counts.transient_mailboxes, counts, rules):
        cause = _transient_cause(provider, counts, rules)
        return Opening(cause, None, _share(counts.transient_cycles, counts), counts.transient_mailboxes)
    return None


def _cycles_of(cause: Cause, counts: WindowCounts) -> int:
    """The window's failed cycles an incident about `cause` is about."""
    if cause.kind == TRANSIENT:
        return counts.transient_cycles
    same = (c for c in counts.codes if c.kind == cause.kind and (cause.kind == CONFIG or c.code == cause.code))
    return sum(c.cycles for c in same)


def should_close(counts: WindowCounts, rules: IncidentThresholds, cause: Cause) -> bool:
    """Close when the failures of the incident's cause fall back under the ratio, with at least one success.

    Failures of another cause (an outage during an `invalid_grant` storm) do not keep it open. A quiet
    window says nothing about the provider (held-back mailboxes wait the longest rung), so it
    keeps the incident open: closing then would pull every held mailbox forward into a provider that
    may still be down, and reopen a moment later (seen in `tokenwarden simulate`).
    """
    return counts.successes >= 1 and _share(_cycles_of(cause, counts), counts) < rules.failure_ratio
