"""The scripted fault scenarios of `tokenwarden simulate`, as plans in simulated minutes: pure.

Why plans: the runner only replays them against the sandbox, so what each scenario does is readable
(and testable) here. Per-mailbox faults are *armed* at a planned time on whichever untouched healthy
mailbox is due to refresh next, so a burst really begins then (a fault armed on a mailbox that
refreshes 40 minutes later would begin 40 minutes later); each mailbox gets at most one. They are
spread evenly over the run, overlapping the provider-wide windows as they would in life.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from web.simulate_model import Window

SCENARIOS = ("transient-bursts", "revocations", "provider-outage", "misconfiguration", "combined")
BURST_SHARE, REVOKED_SHARE = 0.20, 0.01
BURST_MINUTES = (2.0, 8.0)
RETRY_AFTER_SECONDS = (60.0, 300.0)
OUTAGE_MINUTES, MISCONFIG_MINUTES = 30.0, 20.0
FAULTS_FROM, FAULTS_UNTIL = 0.05, 0.85  # share of the run: a warm-up before, time to settle after


@dataclass(frozen=True)
class Burst:
    """Transient failures of one mailbox for `minutes`, from its first refresh after `at`."""

    at: float
    minutes: float
    mode: str  # a sandbox fault mode: http_5xx | timeout | rate_limit
    status: int = 502
    retry_after_seconds: float = 0.0  # simulated seconds (rate_limit)


@dataclass(frozen=True)
class Plan:
    scenario: str
    minutes: float
    mailboxes: int
    bursts: tuple[Burst, ...] = ()
    revocations: tuple[float, ...] = ()  # when a mailbox's grant is revoked (for good)
    outage: Window | None = None  # every token request answers 503
    misconfig: Window | None = None  # every token request answers invalid_client (our rotated secret)

    def describe(self) -> str:
        parts = []
        if self.bursts:
            low, high = BURST_MINUTES
            parts.append(f"{len(self.bursts)} transient bursts ({low:g}-{high:g} min of 5xx/timeouts/429)")
        if self.revocations:
            parts.append(f"{len(self.revocations)} revoked grant(s)")
        if self.outage:
            parts.append(f"provider outage (503) {_span(self.outage)}")
        if self.misconfig:
            parts.append(f"invalid_client (rotated secret) {_span(self.misconfig)}")
        return "; ".join(parts) or "no faults"


def _span(window: Window) -> str:
    return f"min {window.start:g}-{window.end:g}"


def _burst(at: float, rng: random.Random) -> Burst:
    minutes = round(rng.uniform(*BURST_MINUTES), 2)
    mode = rng.choice(("http_5xx", "timeout", "rate_limit"))
    if mode == "rate_limit":
        return Burst(at, minutes, mode, 429, round(rng.uniform(*RETRY_AFTER_SECONDS)))
    return Burst(at, minutes, mode, rng.choice((500, 502, 503)) if mode == "http_5xx" else 502)


def _windows(scenario: str, minutes: float) -> tuple[Window | None, Window | None]:
    outage = misconfig = None
    if scenario in ("provider-outage", "combined"):
        start = round(0.25 * minutes, 2)
        outage = Window(start, start + min(OUTAGE_MINUTES, 0.25 * minutes))
    if scenario in ("misconfiguration", "combined"):
        start = round(0.6 * minutes, 2)
        misconfig = Window(start, start + min(MISCONFIG_MINUTES, 0.2 * minutes))
    return outage, misconfig


def plan(scenario: str, mailboxes: int, minutes: float, seed: int) -> Plan:
    """The scenario's faults for `mailboxes` over `minutes`; the same seed gives the same plan."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    rng = random.Random(f"{scenario}:{seed}")
    outage, misconfig = _windows(scenario, minutes)
    low, high = FAULTS_FROM * minutes, FAULTS_UNTIL * minutes
    burst_count = round(BURST_SHARE * mailboxes) if scenario in ("transient-bursts", "combined") else 0
    revoke_count = max(1, round(REVOKED_SHARE * mailboxes)) if scenario in ("revocations", "combined") else 0
    bursts = [_burst(round(rng.uniform(low, high), 3), rng) for _ in range(burst_count)]
    revocations = [round(rng.uniform(low, high), 3) for _ in range(revoke_count)]
    return Plan(
        scenario=scenario,
        minutes=minutes,
        mailboxes=mailboxes,
        bursts=tuple(sorted(bursts, key=lambda b: b.at)),
        revocations=tuple(sorted(revocations)),
        outage=outage,
        misconfig=misconfig,
    )
