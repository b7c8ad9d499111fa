"""The demo's SMTP server: accepts every message and keeps it in a Maildir; and reading that Maildir back.

Why a Maildir in the data folder: the worker delivers over real SMTP (the production code path), the
web app in the same demo shows the mail at /dev/mail, and a second `make demo` still has the earlier
mail. Nothing leaves the machine: the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import mailbox
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import cast

from aiosmtpd.smtp import SMTP, Envelope, Session

MAX_LISTED = 200
CLOSE_TIMEOUT_SECONDS = 5.0


class MaildirHandler:
    """aiosmtpd handler: every accepted message becomes one file in the Maildir's `new/`."""

    def __init__(self, path: Path) -> None:
        self.maildir = mailbox.Maildir(path, create=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = cast(bytes, envelope.original_content or envelope.content)
        self.maildir.add(raw)
        return "250 OK: kept for /dev/mail"


@contextlib.asynccontextmanager
async def mail_catcher(path: Path, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve SMTP on `host` and a free port on the running loop; yield its smtp:// URL."""
    loop = asyncio.get_running_loop()
    handler = MaildirHandler(path)
    server = await loop.create_server(lambda: SMTP(handler, hostname="mail.demo.test", loop=loop), host, 0)
    try:
        yield f"smtp://{host}:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class StoredMail:
    """One message as /dev/mail shows it."""

    key: str
    sent_at: datetime | None
    sender: str
    recipient: str
    subject: str
    text: str
    html: str

    @property
    def sent_label(self) -> str:
        """To the second: in the demo several emails arrive within the same minute."""
        return self.sent_at.strftime("%d %b %Y, %H:%M:%S UTC") if self.sent_at else "—"


def _part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body(preferencelist=(subtype,))
    return body.get_content() if body is not None and body.get_content_subtype() == subtype else ""


def _date(message: EmailMessage) -> datetime | None:
    try:
        return parsedate_to_datetime(str(message["Date"])).astimezone(UTC) if message["Date"] else None
    except (TypeError, ValueError):
        return None


def _parse(key: str, raw: bytes) -> StoredMail:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return StoredMail(
        key=key,
        sent_at=_date(message),
        sender=str(message["From"] or ""),
        recipient=str(message["To"] or ""),
        subject=str(message["Subject"] or "(no subject)"),
        text=_part(message, "plain"),
        html=_part(message, "html"),
    )


def list_mail(path: Path, limit: int = MAX_LISTED) -> list[StoredMail]:
    """The newest `limit` messages, newest first (by their Date header, then by arrival)."""
    if not path.exists():
        return []
    box = mailbox.Maildir(path, create=False)
    found = [_parse(key, box.get_bytes(key)) for key in box.keys()]  # noqa: SIM118 (a Maildir, not a dict)
    oldest = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda mail: (mail.sent_at or oldest, mail.key), reverse=True)
    return found[:limit]


def get_mail(path: Path, key: str) -> StoredMail | None:
    """One message by its Maildir key; None for a key that is not in the Maildir (never a path)."""
    if not path.exists():
        return None
    box = mailbox.Maildir(path, create=False)
    if key not in box:  # only a key listed in the Maildir, never a path
        return None
    return _parse(key, box.get_bytes(key))
