"""TLS to the SMTP server: STARTTLS when offered, `?starttls=require`, and implicit TLS (`smtps://`).

The server's certificate is self-signed for 127.0.0.1; the client trusts it through SSL_CERT_FILE,
which the default SSL context reads, so certificate verification stays on as in production.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from statemachine.mail.mailer import Mail, SmtpConfig, TemporaryDeliveryError, build_message, send
from tests.smtp import SmtpServer, self_signed_tls, start_smtp_server

SENDER = "Tokenwarden <noreply@tokenwarden.test>"
MAIL = Mail("owner@example.test", "Subject", "text", "<p>html</p>", "<tw.1@tokenwarden.test>", datetime.now(UTC))


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    context, ca_file = self_signed_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    return context


@pytest.fixture
async def servers() -> AsyncIterator[list[SmtpServer]]:
    started: list[SmtpServer] = []
    yield started
    for server in started:
        await server.stop()


async def test_starttls_is_used_when_offered(tls: ssl.SSLContext, servers: list[SmtpServer]) -> None:
    servers.append(server := await start_smtp_server(starttls=tls))
    await send(SmtpConfig.from_url(server.url(), timeout=5), build_message(MAIL, SENDER))
    assert [r.tls for r in server.handler.received] == [True]


async def test_plain_smtp_when_starttls_is_not_offered(servers: list[SmtpServer]) -> None:
    servers.append(server := await start_smtp_server())
    await send(SmtpConfig.from_url(server.url(), timeout=5), build_message(MAIL, SENDER))
    assert [r.tls for r in server.handler.received] == [False]


async def test_required_starttls_refuses_a_server_without_it(servers: list[SmtpServer]) -> None:
    servers.append(server := await start_smtp_server())
    with pytest.raises(TemporaryDeliveryError, match="not supported"):
        await send(SmtpConfig.from_url(f"{server.url()}?starttls=require", timeout=5), build_message(MAIL, SENDER))
    assert server.handler.received == []


async def test_smtps_speaks_tls_from_the_first_byte(tls: ssl.SSLContext, servers: list[SmtpServer]) -> None:
    servers.append(server := await start_smtp_server(implicit_tls=tls))
    url = server.url().replace("smtp://", "smtps://")
    await send(SmtpConfig.from_url(url, timeout=5), build_message(MAIL, SENDER))
    assert [r.tls for r in server.handler.received] == [True]


async def test_an_untrusted_certificate_is_a_temporary_failure(
    tls: ssl.SSLContext, servers: list[SmtpServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    servers.append(server := await start_smtp_server(implicit_tls=tls))
    (tmp_path / "other").mkdir()
    _, other_ca = self_signed_tls(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
    with pytest.raises(TemporaryDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        await send(
            SmtpConfig.from_url(server.url().replace("smtp://", "smtps://"), timeout=5), build_message(MAIL, SENDER)
        )
    assert server.handler.received == []
