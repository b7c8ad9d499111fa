"""Render the user emails (subject, plain text, HTML) from templates/emails/.

Rendering happens when the outbox row is written, inside the transaction that changes the
mailbox's state, not later when the delivery job picks the row up. The email then shows the
state that caused it (the reason, the next attempt, the reconnect link as they were at that
moment) even if the mailbox has moved on by the time SMTP accepts it, and a resend after a crash
sends exactly the same text. Pure: no I/O besides reading the templates, no clock.
"""

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from statemachine.core.states import EmailKind
from statemachine.providers import registry

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates" / "emails"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Only the .html part is escaped: the subject and the text part are plain text, where HTML
# entities would show up literally. The subject is made header-safe in render_email instead.
_env = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class EmailContext:
    """What an email may show. Strings are shown as given, so pass redacted, plain-words text."""

    mailbox_address: str
    provider: str
    recipient_name: str | None
    reason: str | None
    reconnect_url: str | None
    next_attempt_at: datetime | None
    admin: bool = False


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def provider_display_name(provider: str) -> str:
    """Return the name users know the provider by: its registered label, e.g. Gmail."""
    return registry.label(provider)


def format_utc(moment: datetime) -> str:
    """Format an aware datetime as "28 Nov 2026, 14:05 UTC", independent of the process locale.

    Raises:
        ValueError: `moment` is naive; its time zone would be a guess.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("next_attempt_at must be timezone-aware")
    utc = moment.astimezone(UTC)
    return f"{utc.day} {_MONTHS[utc.month - 1]} {utc.year}, {utc:%H:%M} UTC"


def render_email(kind: EmailKind, context: EmailContext) -> RenderedEmail:
    """Render the subject, text and HTML parts of one email.

    Raises:
        ValueError: an unknown kind, a naive `next_attempt_at`, or a reconnect URL that is not http(s).
    """
    kind = EmailKind(kind)
    values = _template_values(context)
    subject = _one_line(_env.get_template(f"{kind.value}.subject.txt").render(values))
    values["subject"] = subject
    text = _env.get_template(f"{kind.value}.txt").render(values)
    html = _env.get_template(f"{kind.value}.html").render(values)
    return RenderedEmail(subject=subject, text=text, html=html)


def _template_values(context: EmailContext) -> dict[str, Any]:
    url = context.reconnect_url
    if url is not None and not url.lower().startswith(("https://", "http://")):
        raise ValueError("reconnect_url must be an http(s) URL")
    values = asdict(context)
    values["provider_name"] = provider_display_name(context.provider)
    values["reason"] = context.reason.strip() if context.reason else None
    values["next_attempt_at"] = format_utc(context.next_attempt_at) if context.next_attempt_at else None
    return values


def _one_line(subject: str) -> str:
    # str.split() with no argument splits on every line break Python knows (CR, LF, VT, FF,
    # U+0085, U+2028...), so no value can start a second header line.
    return " ".join(subject.split())
