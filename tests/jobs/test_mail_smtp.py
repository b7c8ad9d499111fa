"""statemachine.mail.mailer against a real local SMTP server (aiosmtpd): the message, AUTH, and failure classes."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest

from statemachine.mail.mailer import (
    Mail,
    PermanentDeliveryError,
    SmtpConfig,
    TemporaryDeliveryError,
    build_message,
    retry_delay_seconds,
    send,
    send_with_retries,
)
from tests.smtp import PERMANENT, SmtpServer, smtp_server_fixture  # noqa: F401

SENDER = "Tokenwarden <noreply@tokenwarden.test>"
PASSWORD = "p@ss:w/rd-SMTP-SECRET"
MAIL = Mail(
    recipient="owner@example.test",
    subject="Please reconnect your Gmail account ana@gmail.test",
    body_text="Hi Ana,\n\nplain text part\n",
    body_html="<!DOCTYPE html><html><body><p>Hi Ana, <b>html</b> part</p></body></html>",
    message_id="<tokenwarden.abc123@tokenwarden.test>",
    created_at=datetime(2026, 11, 28, 14, 5, tzinfo=UTC),
)


def config(url: str) -> SmtpConfig:
    return SmtpConfig.from_url(url, timeout=2.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_message_is_multipart_alternative_text_first_with_row_headers(smtp_server: SmtpServer) -> None:
    await send(config(smtp_server.url()), build_message(MAIL, SENDER))
    (received,) = smtp_server.handler.received
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert "plain text part" in message.get_body(("plain",)).get_content()
    assert "<b>html</b>" in message.get_body(("html",)).get_content()
    assert (message["To"], message["Subject"], message["Message-ID"]) == (MAIL.recipient, MAIL.subject, MAIL.message_id)
    assert message["Date"].datetime == MAIL.created_at
    assert received.mail_from == "noreply@tokenwarden.test"
    assert received.rcpt_tos == ("owner@example.test",)
    assert received.login is None


async def test_credentials_from_the_url_are_url_decoded_and_sent(smtp_server: SmtpServer) -> None:
    smtp_server.require_login("mailer@tokenwarden.test", PASSWORD)
    await send(config(smtp_server.url("mailer@tokenwarden.test", PASSWORD)), build_message(MAIL, SENDER))
    assert [r.login for r in smtp_server.handler.received] == ["mailer@tokenwarden.test"]


async def test_wrong_password_is_permanent_and_the_error_never_shows_it(smtp_server: SmtpServer) -> None:
    smtp_server.require_login("mailer", "right-password")
    cfg = config(smtp_server.url("mailer", PASSWORD))
    with pytest.raises(PermanentDeliveryError, match="authentication failed: SMTP 535") as caught:
        await send(cfg, build_message(MAIL, SENDER))
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(cfg)
    assert smtp_server.messages == []


@pytest.mark.parametrize("reply", ["451 4.7.1 Greylisted, try again later", "421 4.3.2 Service not available"])
async def test_4xx_is_temporary(smtp_server: SmtpServer, reply: str) -> None:
    smtp_server.handler.fail_next(1, reply)
    with pytest.raises(TemporaryDeliveryError, match=reply[:3]):
        await send(config(smtp_server.url()), build_message(MAIL, SENDER))


@pytest.mark.parametrize(("reply", "at"), [(PERMANENT, "RCPT"), ("554 5.7.1 Message rejected as spam", "DATA")])
async def test_5xx_is_permanent(smtp_server: SmtpServer, reply: str, at: str) -> None:
    smtp_server.handler.fail_next(1, reply, at=at)
    with pytest.raises(PermanentDeliveryError, match=reply[:3]):
        await send(config(smtp_server.url()), build_message(MAIL, SENDER))


async def test_connection_refused_is_temporary() -> None:
    with pytest.raises(TemporaryDeliveryError, match="delivery failed"):
        await send(config(f"smtp://127.0.0.1:{free_port()}"), build_message(MAIL, SENDER))


async def test_quick_retries_ride_out_a_blip_and_deliver_once(smtp_server: SmtpServer) -> None:
    smtp_server.handler.fail_next(2)
    await send_with_retries(config(smtp_server.url()), build_message(MAIL, SENDER), tries=3, base_seconds=0)
    assert smtp_server.handler.attempts == 3
    assert len(smtp_server.messages) == 1


async def test_quick_retries_do_not_retry_a_permanent_refusal(smtp_server: SmtpServer) -> None:
    smtp_server.handler.fail_next(1, PERMANENT, at="RCPT")
    with pytest.raises(PermanentDeliveryError):
        await send_with_retries(config(smtp_server.url()), build_message(MAIL, SENDER), tries=3, base_seconds=0)
    assert smtp_server.handler.attempts == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.test", ("mail.test", 25, False, None, None)),
        ("smtp://mail.test:587?starttls=require", ("mail.test", 587, False, True, None)),
        ("smtps://u%40x.test:p%40ss@mail.test", ("mail.test", 465, True, False, "u@x.test")),
    ],
)
def test_smtp_url_forms(url: str, expected: tuple[object, ...]) -> None:
    cfg = SmtpConfig.from_url(url)
    assert (cfg.host, cfg.port, cfg.implicit_tls, cfg.start_tls, cfg.username) == expected


def test_password_is_url_decoded_and_hidden() -> None:
    cfg = SmtpConfig.from_url("smtps://u:p%40ss%3Aw@mail.test")
    assert cfg.password is not None
    assert cfg.password.reveal() == "p@ss:w"
    assert "p@ss" not in repr(cfg)


@pytest.mark.parametrize("url", ["http://mail.test", "smtp://", "smtp://mail.test:99999", "smtp://h?starttls=maybe"])
def test_bad_smtp_urls_are_refused_without_echoing_the_password(url: str) -> None:
    with pytest.raises(ValueError, match=r"\w") as caught:
        SmtpConfig.from_url(url.replace("://", "://u:hunter2@", 1))
    assert "hunter2" not in str(caught.value)


def test_retry_delay_doubles_and_is_capped() -> None:
    assert [retry_delay_seconds(n, 60) for n in (1, 2, 3, 7, 20)] == [60, 120, 240, 3600, 3600]
