"""How `tokenwarden simulate` shows a scenario: a side-by-side table (ours vs naive) or a JSON object.

Why a fixed row set: the README shows these tables, and each row is one of the original plan's
success metrics, so readers can compare runs line by line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from devkit.simulate.metrics import Metrics
from devkit.simulate.model import Window
from devkit.simulate.runner import ScenarioResult
from devkit.simulate.scenarios import ARM_SLACK_MINUTES
from statemachine.providers import registry

NEVER = "never (no email)"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _success(m: Metrics) -> str:
    return f"{_pct(m.success_rate)} of {m.cycles:,} cycles"


def _recovery(m: Metrics) -> str:
    text = f"{_pct(m.recovery_rate)} ({m.recovered}/{m.transient_episodes - m.unsettled})"
    return text + (f", {m.unsettled} still retrying" if m.unsettled else "")


def _disabled(m: Metrics) -> str:
    return f"{_pct(m.disabled_share)} ({m.disabled})"


def _delay(m: Metrics) -> str:
    """In simulated seconds: the goal is TOKENWARDEN_CONFIRM_PERMANENT_SECONDS + 30 s."""
    figures = (m.email_minutes_p50, m.email_minutes_p95, m.email_minutes_max)
    if None in figures:
        return NEVER if m.revoked_failed else "- (no revoked grant met)"
    return " / ".join(f"{minutes * 60:.0f}" for minutes in figures if minutes is not None) + " s"


def _told(m: Metrics) -> str:
    return f"{m.revoked_emailed}/{m.revoked_failed}"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _per_episode(m: Metrics) -> str:
    if m.emails_per_episode is None:
        return "- (no episode)"
    return f"{m.emails_per_episode:.2f} ({_plural(m.emails, 'email')} / {_plural(m.episodes, 'episode')})"


def _window_emails(created: int | None, caused: int | None) -> str:
    if created is None:
        return "-"
    return str(created) if created == caused else f"{created} ({caused} caused by it)"


ROWS: list[tuple[str, Callable[[Metrics], str]]] = [
    ("refresh success rate (of the cycles made)", _success),
    ("automatic recovery of transient episodes", _recovery),
    ("mailboxes disabled at the end", _disabled),
    ("false disconnects (grant still valid)", lambda m: str(m.false_disconnects)),
    ("permanent failure -> email delivered, p50 / p95 / max", _delay),
    ("revoked grants told by email", _told),
    ("user emails per failure episode", _per_episode),
    ("duplicate emails (same kind, same episode)", lambda m: str(m.duplicate_emails)),
    ("user emails created during the outage", lambda m: _window_emails(m.outage_emails, m.outage_emails_caused)),
    (
        "user emails created during invalid_client",
        lambda m: _window_emails(m.misconfig_emails, m.misconfig_emails_caused),
    ),
]
HEADER = ("metric", "ours (tokenwarden)", "naive (disable on 1st failure)")


def _window(window: Window | None) -> str:
    return "-" if window is None else f"min {window.start:.1f}-{window.end:.1f}"


def _incidents(result: ScenarioResult) -> str:
    if not result.incidents:
        return "none"
    spans = []
    for incident in result.incidents:
        kind = f"{registry.label(incident['provider'])} {incident['code'] or 'transient'}"
        opened, closed = incident["opened_minute"], incident["closed_minute"]
        spans.append(f"{kind} min {opened:g}-{closed:g}" if closed is not None else f"{kind} from min {opened:g}, open")
    return f"{len(spans)} opened: " + "; ".join(spans)


def _applied(result: ScenarioResult) -> str:
    """What the sandbox really did; a burst is dropped when no healthy mailbox is due near its planned time."""
    plan, truth = result.plan, result.truth
    parts = []
    if plan.bursts:
        dropped = len(plan.bursts) - truth.bursts
        note = f" ({dropped} dropped: no healthy mailbox due within {ARM_SLACK_MINUTES:g} min)" if dropped else ""
        parts.append(f"{truth.bursts} of {len(plan.bursts)} bursts{note}")
    if plan.revocations:
        parts.append(f"{len(truth.revoked)} of {len(plan.revocations)} revocations")
    if truth.outage:
        parts.append(f"outage {_window(truth.outage)}")
    if truth.misconfig:
        parts.append(f"invalid_client {_window(truth.misconfig)}")
    return ", ".join(parts) or "nothing"


def table(result: ScenarioResult) -> str:
    """The scenario's heading lines and its ours-vs-naive table, as plain text."""
    plan, c = result.plan, result.compression
    lines = [
        f"== {plan.scenario}: {plan.mailboxes:,} mailboxes, {plan.minutes:g} simulated minutes "
        f"in {result.real_seconds / 60:.1f} real minutes ({c.describe()})",
        f"   providers: {plan.mix()}",
        f"   faults: {plan.describe()}",
        f"   applied: {_applied(result)}",
        f"   provider incidents: {_incidents(result)}",
        "",
    ]
    cells = [HEADER, *[(label, show(result.ours), show(result.naive)) for label, show in ROWS]]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    for row in cells:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def as_json(result: ScenarioResult) -> dict[str, Any]:
    """The same facts for machines: every metric of both policies, the plan and what was applied."""
    plan, truth = result.plan, result.truth
    return {
        "scenario": plan.scenario,
        "mailboxes": plan.mailboxes,
        "simulated_minutes": plan.minutes,
        "minute_seconds": result.compression.minute_seconds,
        "speedup": round(result.compression.speedup, 3),
        "real_seconds": round(result.real_seconds, 1),
        "providers": dict(plan.providers),
        "faults": plan.describe(),
        "applied": {
            "bursts": truth.bursts,
            "revoked": len(truth.revoked),
            "outage": None if truth.outage is None else dataclasses.asdict(truth.outage),
            "misconfig": None if truth.misconfig is None else dataclasses.asdict(truth.misconfig),
        },
        "incidents": result.incidents,
        "ours": dataclasses.asdict(result.ours),
        "naive": dataclasses.asdict(result.naive),
    }
