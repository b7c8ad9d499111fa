"""The scripted fault scenarios of `tokenwarden simulate`, as plans in simulated minutes: pure.

Why plans: the runner only replays them against the sandbox, so what each scenario does is readable
(and testable) here. A burst is *armed* at its planned time on whichever untouched healthy mailbox is
due to refresh next, so it really begins then (armed on a mailbox that refreshes 40 minutes later, it
would begin 40 minutes later); a revocation hits a random untouched mailbox, which meets it at its
next refresh. Each mailbox gets at most one fault. Both are spread evenly over the run, but bursts
begin outside the provider-wide windows: inside an outage a burst would be masked, then fire with
dozens of others the moment it ends (a herd no real network produces), and the emails the windows
are said to cause would not be theirs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from devkit.simulate.model import Window
from statemachine.providers import registry

SCENARIOS = ("transient-bursts", "revocations", "provider-outage", "misconfiguration", "combined")
BURST_SHARE, REVOKED_SHARE = 0.20, 0.01
BURST_MINUTES = (2.0, 8.0)
RETRY_AFTER_SECONDS = (60.0, 300.0)
OUTAGE_MINUTES, MISCONFIG_MINUTES = 30.0, 20.0
FAULTS_FROM, FAULTS_UNTIL = 0.05, 0.85  # share of the run: a warm-up before, time to settle after
ARM_SLACK_MINUTES = 3.0  # a per-mailbox fault must begin within this long of its planned time, or it is dropped


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
    outage: Window | None = None  # every token request to `outage_provider` answers 503
    misconfig: Window | None = None  # every token request answers invalid_client (our rotated secret)
    seed: int = 0  # also picks the revoked mailboxes
    providers: tuple[tuple[str, float], ...] = (("google", 1.0),)  # the mix: (provider, share), shares sum to 1
    outage_provider: str = "google"  # an outage is one provider's: Microsoft's when the mix has it

    def provider_of(self, number: int) -> str:
        """Mailbox `number`'s provider: the mix's shares, as consecutive ranges of the numbers."""
        position, total = (number + 0.5) / self.mailboxes, 0.0
        for name, share in self.providers:
            total += share
            if position < total:
                return name
        return self.providers[-1][0]

    def mix(self) -> str:
        return ", ".join(f"{registry.label(name)} {share:.0%}" for name, share in self.providers)

    def describe(self) -> str:
        parts = []
        if self.bursts:
            low, high = BURST_MINUTES
            parts.append(f"{len(self.bursts)} transient bursts ({low:g}-{high:g} min of 5xx/timeouts/429)")
        if self.revocations:
            parts.append(f"{len(self.revocations)} revoked grant(s)")
        if self.outage:
            parts.append(f"{registry.label(self.outage_provider)}-only outage (503) {_span(self.outage)}")
        if self.misconfig:
            parts.append(f"invalid_client (rotated secret) {_span(self.misconfig)}")
        return "; ".join(parts) or "no faults"


def _span(window: Window) -> str:
    return f"min {window.start:g}-{window.end:g}"


def allowed(span: Window, excluded: Sequence[Window]) -> list[Window]:
    """The parts of `span` outside every excluded window."""
    parts = [span]
    for cut in excluded:
        parts = [
            piece
            for part in parts
            for piece in (Window(part.start, min(part.end, cut.start)), Window(max(part.start, cut.end), part.end))
            if piece.end > piece.start
        ]
    return parts


def sample(parts: Sequence[Window], rng: random.Random) -> float:
    """A uniformly random time in the union of `parts` (not empty), to the thousandth of a minute."""
    point = rng.uniform(0.0, sum(p.end - p.start for p in parts))
    for part in parts:
        if point <= part.end - part.start:
            return round(part.start + point, 3)
        point -= part.end - part.start
    return round(parts[-1].end, 3)


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


def parse_providers(text: str) -> tuple[tuple[str, float], ...]:
    """`google=0.6,microsoft=0.4` -> the mix; the shares must be registered providers' and add up to 1."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, share = part.strip().partition("=")
        try:
            value = float(share) if sep else float("nan")
        except ValueError:
            value = float("nan")
        if registry.find(name) is None or not 0 < value <= 1 or name in mix:
            raise ValueError(f"expected registered providers with shares, like google=0.6,microsoft=0.4: {part!r}")
        mix[name] = value
    if abs(sum(mix.values()) - 1) > 1e-6:
        raise ValueError(f"the shares must add up to 1, not {sum(mix.values()):g}")
    return tuple(mix.items())


def plan(
    scenario: str,
    mailboxes: int,
    minutes: float,
    seed: int,
    providers: tuple[tuple[str, float], ...] = (("google", 1.0),),
) -> Plan:
    """The scenario's faults for `mailboxes` over `minutes`; the same seed gives the same plan."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    rng = random.Random(f"{scenario}:{seed}")
    outage, misconfig = _windows(scenario, minutes)
    span = Window(FAULTS_FROM * minutes, FAULTS_UNTIL * minutes)
    windows = [Window(w.start - ARM_SLACK_MINUTES, w.end) for w in (outage, misconfig) if w is not None]
    burst_parts = allowed(span, windows)
    burst_count = round(BURST_SHARE * mailboxes) if scenario in ("transient-bursts", "combined") and burst_parts else 0
    revoke_count = max(1, round(REVOKED_SHARE * mailboxes)) if scenario in ("revocations", "combined") else 0
    bursts = [_burst(sample(burst_parts, rng), rng) for _ in range(burst_count)]
    revocations = [sample([span], rng) for _ in range(revoke_count)]
    return Plan(
        scenario=scenario,
        minutes=minutes,
        mailboxes=mailboxes,
        bursts=tuple(sorted(bursts, key=lambda b: b.at)),
        revocations=tuple(sorted(revocations)),
        outage=outage,
        misconfig=misconfig,
        seed=seed,
        providers=providers,
        outage_provider="microsoft" if "microsoft" in dict(providers) else providers[0][0],
    )
