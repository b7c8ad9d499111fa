"""A real SMTP server for tests: aiosmtpd served on the test's own event loop, on 127.0.0.1, any free port.

Why not aiosmtpd's `Controller`: it runs its own thread and loop and needs a port chosen in advance
(it connects to itself to confirm its start, so port 0 fails). Serving the `SMTP` protocol with
`loop.create_server` on the running loop takes port 0 and keeps everything in the test's loop. The
handler captures every accepted message (parsed), can be told to answer the next N messages with any
reply (421/451 temporary, 550/554 permanent), and checks AUTH credentials when the test sets them
(`auth_require_tls=False`: no TLS in tests).

Usage: `from tests.smtp import smtp_server_fixture  # noqa: F401`, then `async def test_x(smtp_server)`;
`smtp_server.url()` is an `smtp://` URL for SMTP_URL.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TEMPORARY = "451 4.3.0 Temporary failure, try again later"
PERMANENT = "550 5.1.1 Mailbox unavailable"


@dataclass(frozen=True)
class Received:
    """One accepted message, with the envelope and the login it came with (None when not authenticated)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    login: str | None
    tls: bool


@dataclass
class CapturingHandler:
    """aiosmtpd handler: accepts and records messages, or answers scripted failures first."""

    received: list[Received] = field(default_factory=list)
    credentials: dict[str, str] = field(default_factory=dict)
    failures: deque[tuple[str, str]] = field(default_factory=deque)
    attempts: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def fail_next(self, count: int, reply: str = TEMPORARY, *, at: str = "DATA") -> None:
        """Answer `reply` (e.g. "421 ...", "550 ...") for the next `count` messages, at RCPT or DATA."""
        if at not in {"RCPT", "DATA"}:
            raise ValueError("at must be RCPT or DATA")
        self.failures.extend([(at, reply)] * count)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.failures and self.failures[0][0] == "RCPT":
            self.attempts += 1
            return self.failures.popleft()[1]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        if self.failures and self.failures[0][0] == "DATA":
            return self.failures.popleft()[1]
        raw = cast(bytes, envelope.original_content or envelope.content)
        message = cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
        self.received.append(Received(str(envelope.mail_from), tuple(envelope.rcpt_tos), message, login, tls))
        self.changed.set()
        return "250 OK: queued"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        if self.credentials.get(login) != password:
            return AuthResult(success=False, handled=False)  # handled=False: aiosmtpd answers 535 itself
        return AuthResult(success=True, auth_data=data)


@dataclass
class SmtpServer:
    """A running test server; `url` is what SMTP_URL should be set to."""

    handler: CapturingHandler
    server: asyncio.Server
    port: int

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def restart(self) -> None:
        """Serve again on the same port with the same handler (after `stop`, to model an outage)."""
        self.server = (await start_smtp_server(self.port, self.handler)).server

    @property
    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.handler.received]

    def url(self, username: str | None = None, password: str | None = None) -> str:
        auth = f"{quote(username, safe='')}:{quote(password or '', safe='')}@" if username else ""
        return f"smtp://{auth}127.0.0.1:{self.port}"

    def require_login(self, username: str, password: str) -> None:
        """Accept AUTH with these credentials (and record the login on each message); others get 535."""
        self.handler.credentials[username] = password

    async def wait_for(self, count: int, seconds: float = 5.0) -> list[EmailMessage]:
        """Wait until at least `count` messages arrived (for deliveries running in other tasks)."""
        async with asyncio.timeout(seconds):
            while len(self.handler.received) < count:
                self.handler.changed.clear()
                await self.handler.changed.wait()
        return self.messages


async def start_smtp_server(
    port: int = 0,
    handler: CapturingHandler | None = None,
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
) -> SmtpServer:
    """Serve aiosmtpd's SMTP protocol on the running loop, 127.0.0.1, a free port (or `port`, to restart one).

    `starttls` offers STARTTLS with that context; `implicit_tls` speaks TLS from the first byte (smtps).
    """
    loop = asyncio.get_running_loop()
    handler = handler or CapturingHandler()

    def protocol() -> SMTP:
        return SMTP(
            handler,
            hostname="smtp.tokenwarden.test",
            authenticator=handler.authenticate,
            auth_require_tls=False,
            tls_context=starttls,
            loop=loop,
        )

    server = await loop.create_server(protocol, "127.0.0.1", port, ssl=implicit_tls)
    return SmtpServer(handler, server, server.sockets[0].getsockname()[1])


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the CA file a client needs to trust it (point SSL_CERT_FILE at it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


@pytest.fixture(name="smtp_server")
async def smtp_server_fixture() -> AsyncIterator[SmtpServer]:
    """The `smtp_server` fixture; a test module enables it with `from tests.smtp import smtp_server_fixture`."""
    smtp = await start_smtp_server()
    try:
        yield smtp
    finally:
        await smtp.stop()
