"""SMTP delivery of one outbox row: parse `SMTP_URL`, build the MIME message, send it, classify failures.

The message is built only from the outbox row (rendered when the state changed) and the sender
address, with the row's fixed Message-ID and its creation time as `Date`: a resend after a crash is
byte-for-byte the same mail, recognisable as such. Failures leave as `TemporaryDeliveryError` (retry
later: 4xx, network, TLS, timeouts) or `PermanentDeliveryError` (5xx: the server refused for good);
their messages are built from our words, the SMTP code and the server's reply, with the SMTP password
scrubbed, so they can go into logs and `notifications.last_error`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import backoff

from statemachine.core.secrets import Secret

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
STARTTLS_MODES = {"opportunistic": None, "require": True}
MAX_ERROR_CHARS = 300


class DeliveryError(Exception):
    """A send failed; the message is safe to log and store (no credentials)."""


class TemporaryDeliveryError(DeliveryError):
    """Worth retrying later: a 4xx reply, a refused or dropped connection, a timeout, a TLS problem."""


class PermanentDeliveryError(DeliveryError):
    """The server refused for good (5xx): a rejected recipient, failed authentication (535)."""


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to connect; `password` is a `Secret`, so a repr of the config is safe to log."""

    host: str
    port: int
    implicit_tls: bool
    start_tls: bool | None
    username: str | None
    password: Secret | None
    timeout: float

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0) -> SmtpConfig:
        """Parse `smtp://[user:pass@]host[:port][?starttls=require]` or `smtps://...` (implicit TLS, port 465).

        Raises:
            ValueError: the URL is not usable; the message never repeats the password.
        """
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError("expected a URL starting with smtp:// or smtps://")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ValueError("invalid port") from None
        if not parts.hostname:
            raise ValueError("no host")
        return cls(
            host=parts.hostname,
            port=port,
            implicit_tls=parts.scheme == "smtps",
            start_tls=False if parts.scheme == "smtps" else _starttls_mode(parts.query),
            username=unquote(parts.username) if parts.username else None,
            password=Secret(unquote(parts.password)) if parts.password else None,
            timeout=timeout,
        )


def validate_smtp_url(url: str) -> str:
    """Settings parser: fail at start on an unusable SMTP_URL instead of at the first email."""
    SmtpConfig.from_url(url)
    return url


def _starttls_mode(query: str) -> bool | None:
    values = parse_qs(query).get("starttls", ["opportunistic"])
    mode = values[-1].lower()
    if mode not in STARTTLS_MODES:
        raise ValueError(f"starttls must be one of {', '.join(STARTTLS_MODES)}, got {mode!r}")
    return STARTTLS_MODES[mode]


@dataclass(frozen=True)
class Mail:
    """The outbox row's fields that make the message."""

    recipient: str
    subject: str
    body_text: str
    body_html: str
    message_id: str
    created_at: datetime


def build_message(mail: Mail, sender: str) -> EmailMessage:
    """multipart/alternative: the text part first, then HTML (clients show the last one they can render)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.recipient
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(mail.created_at.astimezone(UTC), usegmt=True)
    message["Message-ID"] = mail.message_id
    message.set_content(mail.body_text)
    message.add_alternative(mail.body_html, subtype="html")
    # The default boundary is random; one derived from the Message-ID keeps a resend identical.
    message.set_boundary(f"==tokenwarden-{hashlib.sha256(mail.message_id.encode()).hexdigest()[:32]}==")
    return message


async def send(config: SmtpConfig, message: EmailMessage) -> None:
    """Hand one message to the SMTP server once; raise a classified `DeliveryError` on failure."""
    try:
        await aiosmtplib.send(
            message,
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password.reveal() if config.password else None,
            use_tls=config.implicit_tls,
            start_tls=config.start_tls,
            timeout=config.timeout,
        )
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as err:
        raise classify(err, config) from None


async def send_with_retries(config: SmtpConfig, message: EmailMessage, tries: int, base_seconds: float) -> None:
    """A few quick tries for blips (a greylisting 451, a dropped connection); longer waits are the outbox's."""
    retried = backoff.on_exception(
        backoff.expo,
        TemporaryDeliveryError,
        max_tries=tries,
        factor=base_seconds,
        max_value=max(base_seconds * 8, 0.0),
        logger=None,
    )(send)
    await retried(config, message)


def classify(err: BaseException, config: SmtpConfig) -> DeliveryError:
    """Map an aiosmtplib or socket error to temporary (retry) or permanent (give up)."""
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused) and err.recipients:
        err = err.recipients[0]
    if isinstance(err, aiosmtplib.SMTPResponseException):
        text = f"SMTP {err.code}: {err.message}"
        if 500 <= err.code < 600:
            return PermanentDeliveryError(_safe(f"{_what(err)} {text}", config))
        return TemporaryDeliveryError(_safe(f"{_what(err)} {text}", config))
    return TemporaryDeliveryError(_safe(f"{_what(err)} {type(err).__name__}: {err}", config))


def _what(err: BaseException) -> str:
    if isinstance(err, aiosmtplib.SMTPAuthenticationError):
        return "authentication failed:"
    if isinstance(err, aiosmtplib.SMTPRecipientRefused):
        return "recipient refused:"
    if isinstance(err, aiosmtplib.SMTPSenderRefused):
        return "sender refused:"
    if isinstance(err, aiosmtplib.SMTPNotSupported):
        return "not supported by the server (check SMTP_URL):"
    if isinstance(err, TimeoutError):
        return "timed out:"
    return "delivery failed:"


def _safe(text: str, config: SmtpConfig) -> str:
    """One line, bounded, and never the password (a server may echo what it was sent)."""
    if config.password and config.password.reveal():
        text = text.replace(config.password.reveal(), "***")
    return " ".join(text.split())[:MAX_ERROR_CHARS]


def retry_delay_seconds(attempts: int, base_seconds: float, cap_seconds: float = 3600.0) -> float:
    """The outbox's wait after the n-th failed delivery: base, 2x, 4x ... capped (default 1 h)."""
    return float(min(base_seconds * 2 ** max(attempts - 1, 0), cap_seconds))
