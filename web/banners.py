"""What the dashboard says about one mailbox, as a pure function of its state (docs/lifecycle.md).

Kept apart from the templates so every state and wording is one table test, and free of I/O and
the clock (`now` is an argument). During a provider incident the mailbox gets a calm line instead
of an alarm: the page shows one notice for the whole provider, the user has nothing to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from statemachine.core.states import State
from statemachine.mail.emails import format_utc, provider_display_name

RED_CIRCLE = "\U0001f534"  # 🔴
WARNING_SIGN = "\u26a0\ufe0f"  # ⚠️ (with the emoji presentation selector)
# a verdict's code, with the provider's number when it has one: "invalid_grant/AADSTS50076"
_CODE = r"[a-z0-9_]{1,64}(?:/[A-Z]{0,16}[0-9]{1,12})?"
_CODE_PREFIX = re.compile(rf"^{_CODE}: ")
_BARE_CODE = re.compile(rf"^{_CODE}$")  # e.g. "transient" when no verdict was given
_NO_REASON = "The connection stopped working."
_OPERATOR_REASON = "It was disconnected by an administrator."


@dataclass(frozen=True)
class Banner:
    """`kind` is the stable `data-banner` marker; `tone` picks the colour; `reconnect` shows the button."""

    kind: str
    tone: str
    title: str
    detail: str | None = None
    reconnect: bool = False


def plain_reason(last_error: str | None, failure_kind: str | None) -> str:
    """The reason part of `token_refresh_error` ("invalid_grant: Google says ...") in plain words."""
    if last_error:
        reason = _CODE_PREFIX.sub("", last_error.strip(), count=1).strip()
        if reason and not _BARE_CODE.match(reason):
            return reason
    return _NO_REASON if failure_kind else _OPERATOR_REASON


def next_try_text(next_attempt_at: datetime | None, now: datetime) -> str:
    """When the next automatic try is, relative and absolute: "in 4 minutes (28 Nov 2026, 14:05 UTC)"."""
    if next_attempt_at is None:
        return "Next try: soon."
    seconds = (next_attempt_at - now).total_seconds()
    if seconds < 60:
        return "Next try: any moment now."
    minutes = round(seconds / 60)
    if minutes < 90:
        relative = f"in {minutes} minute{'s' if minutes != 1 else ''}"
    elif minutes < 36 * 60:
        relative = f"in about {round(minutes / 60)} hours"
    else:
        relative = f"in about {round(minutes / 1440)} days"
    return f"Next try: {relative} ({format_utc(next_attempt_at)})."


def banner_for(
    state: str,
    last_error: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
    *,
    provider: str,
    failure_kind: str | None = None,
    incident: bool = False,
) -> Banner:
    """The banner of one mailbox; `incident` is True while an open incident of its provider holds its last failure."""
    name = provider_display_name(provider)
    if state == State.HEALTHY:
        return Banner(kind="connected", tone="quiet", title="Connected")
    if incident and (state != State.DISCONNECTED or failure_kind == "transient"):
        # a revoked grant or an operator's disconnect predates the incident: waiting will not fix it
        return Banner(
            kind="incident",
            tone="calm",
            title=f"Waiting for {name} to recover",
            detail="This will reconnect on its own; you don't need to do anything.",
        )
    if state == State.DISCONNECTED:
        return Banner(
            kind="disconnected",
            tone="danger",
            title=f"{RED_CIRCLE} {name} connection lost",
            detail=plain_reason(last_error, failure_kind),
            reconnect=True,
        )
    if state in (State.RETRYING, State.DEGRADED):
        # never a reason here: a config failure is ours, and a blip is not worth explaining (docs/lifecycle.md)
        return Banner(
            kind="trouble",
            tone="warning",
            title=f"{WARNING_SIGN} Having trouble connecting. Retrying automatically.",
            detail=next_try_text(next_attempt_at, now),
        )
    raise ValueError(f"unknown state: {state!r}")
