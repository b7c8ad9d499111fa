"""banner_for: one row per situation the dashboard can be in (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from web.banners import Banner, banner_for, next_try_text, plain_reason

NOW = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
REVOKED = "invalid_grant: Gmail says access was revoked or has expired; the mailbox owner needs to reconnect."
TIMEOUT = "read_timeout: The token endpoint did not answer in time; we will retry."
LOST = "\U0001f534 Gmail connection lost"
TROUBLE = "\u26a0\ufe0f Having trouble connecting. Retrying automatically."


@pytest.mark.parametrize(
    ("state", "error", "kind", "next_at", "incident", "expected"),
    [
        ("healthy", None, None, NOW + timedelta(minutes=50), False, Banner("connected", "quiet", "Connected")),
        ("healthy", None, None, None, True, Banner("connected", "quiet", "Connected")),
        ("retrying", TIMEOUT, "transient", NOW + timedelta(minutes=5), False,
         Banner("trouble", "warning", TROUBLE, "Next try: in 5 minutes (28 Nov 2026, 14:05 UTC).")),
        ("degraded", TIMEOUT, "transient", NOW + timedelta(minutes=1), False,
         Banner("trouble", "warning", TROUBLE, "Next try: in 1 minute (28 Nov 2026, 14:01 UTC).")),
        ("retrying", "invalid_client: our fault", "config", NOW + timedelta(hours=3), False,
         Banner("trouble", "warning", TROUBLE, "Next try: in about 3 hours (28 Nov 2026, 17:00 UTC).")),
        ("disconnected", REVOKED, "permanent", None, False,
         Banner("disconnected", "danger", LOST, REVOKED.split(": ", 1)[1], reconnect=True)),
        ("disconnected", None, None, None, False,
         Banner("disconnected", "danger", LOST, "It was disconnected by an administrator.", reconnect=True)),
        ("disconnected", "transient", "transient", None, False,
         Banner("disconnected", "danger", LOST, "The connection stopped working.", reconnect=True)),
        ("degraded", TIMEOUT, "transient", None, True,
         Banner("incident", "calm", "Waiting for Gmail to recover",
                "This will reconnect on its own; you don't need to do anything.")),
        ("disconnected", "transient", "transient", None, True,
         Banner("incident", "calm", "Waiting for Gmail to recover",
                "This will reconnect on its own; you don't need to do anything.")),
        # revoked (or disconnected by an operator) before the incident: waiting will not fix it
        ("disconnected", REVOKED, "permanent", None, True,
         Banner("disconnected", "danger", LOST, REVOKED.split(": ", 1)[1], reconnect=True)),
        ("disconnected", None, None, None, True,
         Banner("disconnected", "danger", LOST, "It was disconnected by an administrator.", reconnect=True)),
    ],
)  # fmt: skip
def test_banner_for(
    state: str, error: str | None, kind: str | None, next_at: datetime | None, incident: bool, expected: Banner
) -> None:
    assert banner_for(state, error, next_at, NOW, provider="google", failure_kind=kind, incident=incident) == expected


def test_the_emoji_are_the_real_characters_not_mojibake() -> None:
    lost = banner_for("disconnected", REVOKED, None, NOW, provider="google")
    trouble = banner_for("retrying", None, None, NOW, provider="google")
    assert lost.title.startswith("🔴")
    assert trouble.title.startswith("⚠️")
    assert "ð" not in lost.title + trouble.title
    assert "â" not in lost.title + trouble.title


def test_the_provider_name_is_the_one_users_know() -> None:
    assert banner_for("disconnected", None, None, NOW, provider="google").title == "🔴 Gmail connection lost"
    assert banner_for("disconnected", None, None, NOW, provider="yahoo").title == "🔴 Yahoo connection lost"
    outlook = banner_for("disconnected", None, None, NOW, provider="microsoft")
    assert outlook.title == "🔴 Outlook / Microsoft 365 connection lost"
    waiting = banner_for("retrying", None, None, NOW, provider="microsoft", incident=True)
    assert waiting.title == "Waiting for Outlook / Microsoft 365 to recover"


@pytest.mark.parametrize(
    ("next_at", "text"),
    [
        (None, "Next try: soon."),
        (NOW - timedelta(minutes=3), "Next try: any moment now."),
        (NOW + timedelta(seconds=30), "Next try: any moment now."),
        (NOW + timedelta(minutes=89), "Next try: in 89 minutes (28 Nov 2026, 15:29 UTC)."),
        (NOW + timedelta(days=3), "Next try: in about 3 days (1 Dec 2026, 14:00 UTC)."),
    ],
)
def test_next_try_text(next_at: datetime | None, text: str) -> None:
    assert next_try_text(next_at, NOW) == text


SIGN_IN_AGAIN = "Microsoft says your organisation requires you to sign in again; reconnect to continue."


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (REVOKED, "permanent", REVOKED.split(": ", 1)[1]),
        ("Plain words without a code.", "transient", "Plain words without a code."),
        ("invalid_grant", "permanent", "The connection stopped working."),
        ("invalid_grant/AADSTS50076", "permanent", "The connection stopped working."),
        (f"interaction_required/AADSTS70043: {SIGN_IN_AGAIN}", "permanent", SIGN_IN_AGAIN),
        ("", "permanent", "The connection stopped working."),
        (None, None, "It was disconnected by an administrator."),
    ],
)
def test_plain_reason_never_shows_a_raw_code_alone(error: str | None, kind: str | None, reason: str) -> None:
    assert plain_reason(error, kind) == reason


def test_an_unknown_state_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown state"):
        banner_for("asleep", None, None, NOW, provider="google")
