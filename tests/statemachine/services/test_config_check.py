"""What check-config calls unsafe for production, from the settings alone (no database)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from statemachine.services.config_check import missing_clients, redact_url, shown_settings, unsafe_settings
from statemachine.services.settings import read_settings

PRODUCTION = {
    "DATABASE_URL": "postgresql://tokenwarden:db-PASSWORD-1@db.internal/tokenwarden",
    "REDIS_URL": "rediss://:redis-PASSWORD-2@cache.internal:6380/0",
    "SMTP_URL": "smtps://mailer:smtp-PASSWORD-3@smtp.example.com:465",
    "TOKENWARDEN_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "TOKENWARDEN_SECRET_KEY": "a-production-secret-key-of-40-characters!",
    "TOKENWARDEN_BASE_URL": "https://tokens.example.com",
    "TOKENWARDEN_MAIL_FROM": "Example <noreply@example.com>",
    "GOOGLE_CLIENT_ID": "123.apps.googleusercontent.com",
    "GOOGLE_CLIENT_SECRET": "GOCSPX-google-SECRET-4",
}
SECRETS = ("db-PASSWORD-1", "redis-PASSWORD-2", "smtp-PASSWORD-3", "GOCSPX-google-SECRET-4",
           PRODUCTION["TOKENWARDEN_ENCRYPTION_KEYS"], PRODUCTION["TOKENWARDEN_SECRET_KEY"])  # fmt: skip


def findings(**changes: str | None) -> list[str]:
    env = {key: value for key, value in {**PRODUCTION, **changes}.items() if value is not None}
    return unsafe_settings(*read_settings(env))


def test_a_production_environment_has_no_finding() -> None:
    assert findings() == []


def test_every_setting_is_shown_with_its_source_and_no_secret() -> None:
    lines = {line.name: line for line in shown_settings(read_settings(PRODUCTION)[1])}
    assert (lines["TOKENWARDEN_SECRET_KEY"].value, lines["TOKENWARDEN_SECRET_KEY"].source) == ("set", "environment")
    assert lines["TOKENWARDEN_ENCRYPTION_KEYS"].value == "set (1 key)"
    assert lines["DATABASE_URL"].value == "postgresql+asyncpg://tokenwarden:***@db.internal/tokenwarden"
    assert lines["REDIS_URL"].value == "rediss://:***@cache.internal:6380/0"
    assert (lines["TOKENWARDEN_SCAN_INTERVAL_SECONDS"].value, lines["TOKENWARDEN_SCAN_INTERVAL_SECONDS"].source) == (
        "60", "default")  # fmt: skip
    assert lines["TOKENWARDEN_CYCLE_DELAYS_SECONDS"].value == "60,300,900,1800,3600"
    assert not [line for line in lines.values() for secret in SECRETS if secret in line.value]


def test_an_unset_secret_is_shown_as_unset() -> None:
    lines = {line.name: line.value for line in shown_settings(read_settings({})[1])}
    assert lines["GOOGLE_CLIENT_SECRET"] == lines["TOKENWARDEN_SECRET_KEY"] == "unset"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"TOKENWARDEN_SECRET_KEY": None}, "TOKENWARDEN_SECRET_KEY is not set"),
        ({"TOKENWARDEN_ENCRYPTION_KEYS": None}, "TOKENWARDEN_ENCRYPTION_KEYS is not set"),
        ({"TOKENWARDEN_BASE_URL": "http://tokens.example.com"}, "TOKENWARDEN_BASE_URL is plain http"),
        ({"TOKENWARDEN_BASE_URL": None}, "TOKENWARDEN_BASE_URL is not set"),
        ({"TOKENWARDEN_MAIL_FROM": None}, "TOKENWARDEN_MAIL_FROM is not set"),
        ({"GOOGLE_TOKEN_URL": "http://127.0.0.1:8000/dev/sandbox/token"}, "GOOGLE_TOKEN_URL is http://127.0.0.1"),
        ({"TOKENWARDEN_SCAN_INTERVAL_SECONDS": "2", "TOKENWARDEN_REFRESH_LEAD_SECONDS": "30"},
         "TOKENWARDEN_SCAN_INTERVAL_SECONDS=2 is a demo or test timing"),
        ({"TOKENWARDEN_REMINDER_DAYS": "0.0014,0.0035"}, "TOKENWARDEN_REMINDER_DAYS=0.0014,0.0035 is a demo"),
    ],
)  # fmt: skip
def test_each_unsafe_setting_is_one_finding(changes: dict[str, str | None], expected: str) -> None:
    found = findings(**changes)
    assert [f for f in found if f.startswith(expected)], found


def test_localhost_over_http_is_fine_and_longer_timings_too() -> None:
    assert findings(TOKENWARDEN_BASE_URL="http://localhost:8000", TOKENWARDEN_SCAN_INTERVAL_SECONDS="30") == []


def test_a_provider_with_mailboxes_needs_its_client() -> None:
    settings = read_settings({**PRODUCTION, "GOOGLE_CLIENT_SECRET": ""})[0]
    assert missing_clients(settings, {"google": 3, "microsoft": 0}) == [
        "3 google mailbox(es) but no google client credentials: every refresh of theirs fails"
    ]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("smtp://user:pa:ss@host:25", "smtp://user:***@host:25"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("postgresql+asyncpg://u:p@h/db?ssl=require", "postgresql+asyncpg://u:***@h/db?ssl=require"),
    ],
)
def test_passwords_in_urls_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown
