"""The demo timings, and what the web app needs to know in demo mode.

Why shortened timings: with the production defaults a visitor would wait 30 minutes for a disconnect
and a day for a reminder. The demo runs the very same policy with every delay shortened, so
retrying -> degraded -> disconnected, the emails, an incident and a recovery all happen within a few
minutes. Each timing is printed and shown with its production default, so nobody mistakes the demo's
numbers for the real ones.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from devkit.sandbox import sandboxes_environment

ACCESS_TOKEN_SECONDS = 120  # the sandbox's access tokens; Google's last an hour
MINUTE_IN_DAYS = 1 / 1440


@dataclass(frozen=True)
class Timing:
    """One shortened setting: the variable and value the worker gets, and how to say both in words."""

    variable: str | None  # None: not a Tokenwarden setting (the sandbox's token lifetime)
    value: str
    label: str
    demo: str
    production: str


def _minutes_as_days(*minutes: int) -> str:
    return ",".join(f"{m * MINUTE_IN_DAYS:.8f}" for m in minutes)


TIMINGS: tuple[Timing, ...] = (
    Timing(None, str(ACCESS_TOKEN_SECONDS), "access tokens last", "2 min", "1 h"),
    Timing("TOKENWARDEN_REFRESH_LEAD_SECONDS", "30", "refresh before expiry", "30 s", "10 min"),
    Timing("TOKENWARDEN_SCAN_INTERVAL_SECONDS", "2", "due-scan every", "2 s", "60 s"),
    Timing("TOKENWARDEN_CYCLE_DELAYS_SECONDS", "15,30,60", "failed cycles retried after", "15, 30, 60 s",
           "1, 5, 15, 30, 60 min"),
    Timing("TOKENWARDEN_DEGRADE_MIN_AGE_SECONDS", "40", "degraded after failing for", "40 s", "5 min"),
    Timing("TOKENWARDEN_DISCONNECT_MIN_AGE_SECONDS", "90", "disconnected after failing for", "90 s", "30 min"),
    Timing("TOKENWARDEN_CONFIRM_PERMANENT_SECONDS", "10", "invalid_grant confirmed after", "10 s", "60 s"),
    Timing("TOKENWARDEN_REPROBE_SECONDS", "120", "transient disconnects re-probed every", "2 min", "6 h"),
    Timing("TOKENWARDEN_REMINDER_DAYS", _minutes_as_days(2, 5, 10), "reminders after", "2, 5, 10 min",
           "1, 3, 7 days"),
    Timing("TOKENWARDEN_INCIDENT_WINDOW_SECONDS", "60", "incident window", "60 s", "10 min"),
    Timing("TOKENWARDEN_INCIDENT_RECOVERY_SPREAD_SECONDS", "10", "retries after an incident spread over", "10 s",
           "60 s"),
    Timing("TOKENWARDEN_OUTBOX_INTERVAL_SECONDS", "2", "outbox swept every", "2 s", "5 s"),
    Timing("TOKENWARDEN_HTTP_TIMEOUT_SECONDS", "3", "token request timeout", "3 s", "10 s"),
    Timing("TOKENWARDEN_RETRY_MAX_SECONDS", "5", "longest wait inside a cycle", "5 s", "30 s"),
)  # fmt: skip

# Not timings a visitor watches, but needed for a quick, quiet demo: a short lease (a refresh job's
# timeout derives from it, and the worker waits for running jobs on Ctrl-C), a short shutdown grace,
# and no worker metrics port (it could clash with something on the machine).
QUIET_SETTINGS = {
    "TOKENWARDEN_LEASE_SECONDS": "60",
    "TOKENWARDEN_SHUTDOWN_GRACE_SECONDS": "5",
    "TOKENWARDEN_METRICS_PORT": "0",
}


def timing_environment() -> dict[str, str]:
    """The TOKENWARDEN_* variables the demo sets for the worker and the web app."""
    shortened = {t.variable: t.value for t in TIMINGS if t.variable is not None}
    return {**shortened, **QUIET_SETTINGS}


def timings_lines(width: int = 100) -> list[str]:
    """For the terminal: every demo timing with its production default in brackets, wrapped."""
    items = "; ".join(f"{t.label} {t.demo} [{t.production}]" for t in TIMINGS)
    head = "demo timings, shortened so everything happens within minutes (production defaults in brackets):"
    return [head, *textwrap.wrap(items, width, initial_indent="  ", subsequent_indent="  ")]


def label_items() -> list[tuple[str, str, str]]:
    """What the web app's "demo timings" strip shows: (what, demo value, production value)."""
    shown = {"degraded after failing for": "degraded after", "disconnected after failing for": "disconnected after",
             "reminders after": "reminders after", "access tokens last": "access tokens last"}  # fmt: skip
    return [(shown[t.label], t.demo, t.production) for t in TIMINGS if t.label in shown]


@dataclass(frozen=True)
class DemoConfig:
    """What the demo's pages need; `tokenwarden demo` hands it to the web app inside an `AppExtension`."""

    maildir: Path
    sandbox_url: str

    @property
    def label(self) -> list[tuple[str, str, str]]:
        return label_items()


def demo_environment(secrets: dict[str, str], urls: dict[str, str], sandbox_url: str, base_url: str) -> dict[str, str]:
    """Every setting of the demo's web app and worker: its secrets, its servers, the sandbox providers (one OAuth
    client for all of them), the timings.

    `urls` holds DATABASE_URL, REDIS_URL and SMTP_URL.
    """
    client = (secrets.get("GOOGLE_CLIENT_ID", ""), secrets.get("GOOGLE_CLIENT_SECRET", ""))
    return {
        **sandboxes_environment(sandbox_url, *client),
        **secrets,
        **urls,
        "TOKENWARDEN_BASE_URL": base_url,
        "TOKENWARDEN_WEBHOOK_ALLOW_PRIVATE": "true",  # the demo host app's receiver is on 127.0.0.1
        "TOKENWARDEN_WEBHOOK_RETRY_BASE_SECONDS": "5",
        "TOKENWARDEN_ALLOWED_RETURN_URLS": f"{base_url}/dev/host",
        "TOKENWARDEN_MAIL_FROM": "Tokenwarden demo <tokenwarden@demo.test>",
        **timing_environment(),
    }


def demo_of(request: Request) -> DemoConfig:
    """The demo's config, which `devkit.demo.pages.extension` put in the app's page context."""
    demo: DemoConfig = request.app.state.page_context["demo"]
    return demo
