"""The connection lifecycle: one `transitions` machine, built once, shared by every mailbox.

The model is a plain `Lifecycle` object, not the ORM row, and callbacks only change that object and
append *records* (history rows to write) and *emails* (outbox rows to write). The caller persists
both in the same transaction as the new state, which is what makes "no email without its state
change, no state change without its history row" true. Time, jitter and the provider-incident flag
come in as the `Occurrence`, so the machine is pure and testable without a database.

docs/lifecycle.md's tables are the contract. Transitions of one trigger are tried in order, the first
whose conditions pass wins; `dest=None` is an internal transition (the state stays, the callbacks
still run, so a failed cycle in `degraded` is still counted and recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from transitions import EventData, Machine, MachineError

from statemachine.core.errors import Verdict
from statemachine.core.policy import Policy
from statemachine.core.states import EmailKind, Event, FailureKind, State

# plain strings: transitions would store an Enum state by its member *name* ("HEALTHY")
H, R, D, X = (s.value for s in (State.HEALTHY, State.RETRYING, State.DEGRADED, State.DISCONNECTED))
FAILURE_KINDS = {
    Event.REFRESH_FAILED_TRANSIENT: FailureKind.TRANSIENT,
    Event.REFRESH_FAILED_PERMANENT: FailureKind.PERMANENT,
    Event.REFRESH_FAILED_CONFIG: FailureKind.CONFIG,
}
REMOVED_REASON = "Removed by the host app."


class InvalidEventError(Exception):
    """An event that the mailbox's current state does not accept (a stale job, or an operator's typo)."""


@dataclass(frozen=True)
class Occurrence:
    """What happened, when, and who says so: the input of one event."""

    at: datetime
    actor: str
    verdict: Verdict | None = None
    expires_in: int | None = None
    incident: bool = False
    jitter: float = 0.0
    note: str | None = None


@dataclass(frozen=True)
class Record:
    """One history row to append."""

    event: str
    from_state: str
    to_state: str
    reason: str
    actor: str
    at: datetime
    error_code: str | None
    attempt: int


@dataclass
class Lifecycle:
    """The persisted connection fields the machine reads and writes; `records` and `emails` are outputs."""

    state: str
    attempt_count: int = 0
    config_failure_count: int = 0
    failed_at: datetime | None = None
    last_error: str | None = None
    failure_kind: str | None = None
    user_notified: bool = False
    episode: int = 0
    next_refresh_at: datetime | None = None
    records: list[Record] = field(default_factory=list)
    emails: list[EmailKind] = field(default_factory=list)
    confirming: bool = field(default=False, repr=False)

    @property
    def is_active(self) -> bool:
        return self.state != X


def _lifecycle(ev: EventData) -> Lifecycle:
    return cast(Lifecycle, ev.model)  # the only model this machine is ever fired on (see `fire`)


def _occ(ev: EventData) -> Occurrence:
    occurrence: Occurrence = ev.kwargs["occurrence"]
    return occurrence


def _policy(ev: EventData) -> Policy:
    policy: Policy = ev.kwargs["policy"]
    return policy


def _episode_age(ev: EventData) -> float:
    lc = _lifecycle(ev)
    start = lc.failed_at or _occ(ev).at
    return (_occ(ev).at - start).total_seconds()


# --- prepare_event: book a failed cycle once per trigger, before any condition looks at the counts ---


def _count_failure(ev: EventData) -> None:
    kind = FAILURE_KINDS.get(Event(ev.event.name))
    if kind is None:
        return
    lc = _lifecycle(ev)
    occ = _occ(ev)
    if lc.failed_at is None:
        lc.failed_at = occ.at
        lc.episode += 1
    lc.confirming = kind is FailureKind.PERMANENT and (
        lc.failure_kind == FailureKind.PERMANENT or _policy(ev).confirm_permanent_seconds <= 0
    )
    if occ.incident:
        pass  # the provider's failures, not this mailbox's: they do not climb its ladder after the incident
    elif kind is FailureKind.CONFIG:
        lc.config_failure_count += 1
    else:
        lc.attempt_count += 1
    if not (kind is FailureKind.TRANSIENT and lc.failure_kind == FailureKind.PERMANENT):
        lc.failure_kind = kind  # a transient answer to the confirming cycle keeps the mailbox confirming
    lc.last_error = occ.verdict.summary if occ.verdict else kind.value


# --- conditions ---


def _reaches_disconnect(ev: EventData) -> bool:
    lc = _lifecycle(ev)
    return _policy(ev).rung(lc.attempt_count, _episode_age(ev)) == X


def _reaches_degrade(ev: EventData) -> bool:
    lc = _lifecycle(ev)
    return _policy(ev).rung(lc.attempt_count, _episode_age(ev)) == D


def _permanent_confirmed(ev: EventData) -> bool:
    lc = _lifecycle(ev)
    return lc.confirming


def _incident(ev: EventData) -> bool:
    return _occ(ev).incident


# --- on_enter: the emails each rung sends (never during a provider incident) ---


def _enter_degraded(ev: EventData) -> None:
    _email(ev, EmailKind.TOKEN_REFRESH_RETRY)


def _enter_disconnected(ev: EventData) -> None:
    if ev.event.name == Event.REFRESH_FAILED_PERMANENT:
        _email(ev, EmailKind.TOKEN_REFRESH_PERMANENT_FAILURE)
    elif ev.event.name == Event.REFRESH_FAILED_TRANSIENT:
        lc = _lifecycle(ev)
        lc.failure_kind = FailureKind.TRANSIENT  # even one still confirming a permanent error: it is re-probed
        _email(ev, EmailKind.TOKEN_REFRESH_FINAL_FAILURE)


def _enter_healthy(ev: EventData) -> None:
    lc = _lifecycle(ev)
    if ev.event.name == Event.REFRESH_SUCCEEDED and lc.user_notified:
        _email(ev, EmailKind.RECONNECTED)
    lc.attempt_count = lc.config_failure_count = 0
    lc.failed_at = lc.last_error = lc.failure_kind = None
    lc.user_notified = lc.confirming = False


def _mark_removed(ev: EventData) -> None:
    """The reason the dashboard and the API show; no reminder is due for a mailbox nobody wants back."""
    lc = cast(Lifecycle, ev.model)
    lc.last_error = f"{Event.REMOVED.value}: {REMOVED_REASON}"
    lc.user_notified = False


def _email(ev: EventData, kind: EmailKind) -> None:
    lc = _lifecycle(ev)
    if _occ(ev).incident:
        return
    lc.emails.append(kind)
    lc.user_notified = kind is not EmailKind.RECONNECTED


# --- after_state_change: schedule the next cycle and record what happened ---


def _next_refresh_at(ev: EventData) -> datetime | None:
    lc = _lifecycle(ev)
    occ, policy = _occ(ev), _policy(ev)
    event = Event(ev.event.name)
    if event is Event.OPS_RETRY_NOW:
        return occ.at
    if event is Event.RECONNECT_REJECTED:
        return lc.next_refresh_at
    if event in (Event.OPS_DISCONNECT, Event.REMOVED):
        return None
    if lc.state == H:
        return policy.next_refresh_at(occ.at, occ.expires_in, occ.jitter)
    if lc.state == X:
        # a dead grant is not hammered; anything else (transient, or our own config failing on a re-probe) may
        # pass, so the mailbox keeps being re-probed and recovers on its own
        dead = lc.failure_kind == FailureKind.PERMANENT
        return None if dead else occ.at + timedelta(seconds=policy.reprobe_seconds)
    retry_after = occ.verdict.retry_after if occ.verdict else None
    if occ.incident and occ.verdict:
        # held back: wait the longest rung, not hammering a provider that is down; healthy mailboxes'
        # refreshes keep sampling it, and the incident's close pulls this one forward
        rung = len(policy.cycle_delays_seconds)
        return occ.at + timedelta(seconds=policy.retry_delay_seconds(rung, occ.jitter, retry_after))
    if lc.failure_kind == FailureKind.PERMANENT and not lc.confirming:  # the confirming cycle, or its retry
        return occ.at + timedelta(seconds=max(policy.confirm_permanent_seconds, retry_after or 0.0))
    failures = lc.config_failure_count if lc.failure_kind == FailureKind.CONFIG else lc.attempt_count
    return occ.at + timedelta(seconds=policy.retry_delay_seconds(failures, occ.jitter, retry_after))


def _settle(ev: EventData) -> None:
    lc = _lifecycle(ev)
    assert ev.transition is not None  # after_state_change runs only once a transition was taken
    source = ev.transition.source
    lc.next_refresh_at = _next_refresh_at(ev)
    if ev.event.name == Event.REFRESH_SUCCEEDED and source == H:
        return  # routine refreshes are counted in metrics, not written to history (docs/lifecycle.md)
    occ = _occ(ev)
    lc.records.append(
        Record(
            event=ev.event.name,
            from_state=source,
            to_state=lc.state,
            reason=_reason(ev),
            actor=occ.actor,
            at=occ.at,
            error_code=occ.verdict.code if occ.verdict else None,
            attempt=lc.attempt_count + lc.config_failure_count,
        )
    )


def _reason(ev: EventData) -> str:
    occ = _occ(ev)
    parts = [occ.verdict.reason if occ.verdict else (occ.note or _DEFAULT_REASONS[Event(ev.event.name)])]
    if occ.incident and occ.verdict:
        parts.append("(provider incident open: not escalated, no email)")
    return " ".join(parts)


_DEFAULT_REASONS = {
    Event.REFRESH_SUCCEEDED: "Token refreshed.",
    Event.RECONNECTED: "The owner connected the mailbox again.",
    Event.RECONNECT_REJECTED: "The consenting account is not this mailbox's account; nothing was stored.",
    Event.OPS_RETRY_NOW: "An operator asked for a refresh now.",
    Event.OPS_DISCONNECT: "An operator disconnected the mailbox.",
    Event.REMOVED: REMOVED_REASON,
    Event.REFRESH_FAILED_TRANSIENT: "Temporary failure.",
    Event.REFRESH_FAILED_PERMANENT: "Access revoked or expired.",
    Event.REFRESH_FAILED_CONFIG: "Our OAuth client configuration was rejected.",
}

_NOT_DURING_INCIDENT = {"unless": [_incident]}
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": Event.REFRESH_SUCCEEDED.value, "source": H, "dest": None},
    {"trigger": Event.REFRESH_SUCCEEDED.value, "source": [R, D, X], "dest": H},
    {"trigger": Event.REFRESH_FAILED_TRANSIENT.value, "source": [H, R, D], "dest": X,
     "conditions": [_reaches_disconnect], **_NOT_DURING_INCIDENT},
    {"trigger": Event.REFRESH_FAILED_TRANSIENT.value, "source": [H, R], "dest": D,
     "conditions": [_reaches_degrade], **_NOT_DURING_INCIDENT},
    {"trigger": Event.REFRESH_FAILED_TRANSIENT.value, "source": H, "dest": R},
    {"trigger": Event.REFRESH_FAILED_TRANSIENT.value, "source": [R, D, X], "dest": None},
    {"trigger": Event.REFRESH_FAILED_PERMANENT.value, "source": [H, R, D], "dest": X,
     "conditions": [_permanent_confirmed], **_NOT_DURING_INCIDENT},
    {"trigger": Event.REFRESH_FAILED_PERMANENT.value, "source": H, "dest": R},
    {"trigger": Event.REFRESH_FAILED_PERMANENT.value, "source": [R, D, X], "dest": None},
    {"trigger": Event.REFRESH_FAILED_CONFIG.value, "source": H, "dest": R},
    {"trigger": Event.REFRESH_FAILED_CONFIG.value, "source": [R, D, X], "dest": None},
    {"trigger": Event.RECONNECTED.value, "source": [H, R, D, X], "dest": H},
    {"trigger": Event.RECONNECT_REJECTED.value, "source": [H, R, D, X], "dest": None},
    {"trigger": Event.OPS_RETRY_NOW.value, "source": X, "dest": R},
    {"trigger": Event.OPS_RETRY_NOW.value, "source": [H, R, D], "dest": None},
    {"trigger": Event.OPS_DISCONNECT.value, "source": [H, R, D], "dest": X},
    {"trigger": Event.REMOVED.value, "source": [H, R, D], "dest": X, "before": [_mark_removed]},
    {"trigger": Event.REMOVED.value, "source": X, "dest": None, "before": [_mark_removed]},
]  # fmt: skip

STATES: list[dict[str, Any]] = [
    {"name": H, "on_enter": [_enter_healthy]},
    {"name": R},
    {"name": D, "on_enter": [_enter_degraded]},
    {"name": X, "on_enter": [_enter_disconnected]},
]

MACHINE = Machine(
    model=None,
    states=STATES,
    transitions=TRANSITIONS,
    initial=None,
    send_event=True,
    auto_transitions=False,
    prepare_event=[_count_failure],
    after_state_change=[_settle],
    name="mailbox",
)
# The events each state accepts, read off the machine once: `get_triggers` scans every event per call.
ACCEPTED = {state["name"]: frozenset(MACHINE.get_triggers(state["name"])) for state in STATES}


def fire(lifecycle: Lifecycle, event: Event, occurrence: Occurrence, policy: Policy) -> Lifecycle:
    """Apply one event to a lifecycle in place and return it.

    Raises InvalidEventError when the current state does not accept the event (e.g. disconnecting
    a mailbox that is already disconnected), leaving the lifecycle unchanged.
    """
    if event.value not in ACCEPTED.get(lifecycle.state, frozenset()):
        raise InvalidEventError(f"event {event.value} is not possible in state {lifecycle.state}")
    try:
        MACHINE.events[event.value].trigger(lifecycle, occurrence=occurrence, policy=policy)
    except MachineError as err:  # pragma: no cover - guarded by ACCEPTED above
        raise InvalidEventError(str(err.value)) from err
    return lifecycle
