"""The records a simulation keeps, in simulated minutes since the scenario began: plain, frozen values.

Why a module of their own: the database reader (records), the plans (scenarios)
and the pure metrics (metrics) all speak in these, and none of them needs the others' code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SUCCESS, TRANSIENT, PERMANENT = "success", "transient", "permanent"
DISCONNECTED = "disconnected"
RECONNECTED_EVENT = "reconnected"
PERMANENT_EMAIL = "token_refresh_permanent_failure"


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    def __contains__(self, at: float) -> bool:
        return self.start <= at <= self.end


@dataclass(frozen=True)
class Cycle:
    """One refresh cycle's outcome (a `refresh_outcomes` row)."""

    mailbox_id: int
    at: float
    outcome: str


@dataclass(frozen=True)
class Change:
    """One history row (`mailbox_state_transitions`)."""

    mailbox_id: int
    at: float
    event: str
    from_state: str
    to_state: str


@dataclass(frozen=True)
class Email:
    """One outbox row: `delivered` is when the SMTP server accepted it, None if it never did."""

    mailbox_id: int
    kind: str
    created: float
    delivered: float | None = None


@dataclass(frozen=True)
class Truth:
    """What the sandbox did, and how the run ended."""

    mailboxes: int
    revoked: Mapping[int, float]  # mailbox id -> when its grant was revoked
    final_states: Mapping[int, str]
    outage: Window | None = None
    misconfig: Window | None = None


@dataclass(frozen=True)
class Episode:
    mailbox_id: int
    start: float
    kind: str
    end: float | None = None  # None: still failing when the run ended
    by_reconnect: bool = False
