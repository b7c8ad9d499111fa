"""`tokenwarden check-config` against the real test database: the listing, the exit status, no secret shown."""

from __future__ import annotations

import os

import pytest

from statemachine.cli.main import main
from tests.database import CLIENT_SECRET, TEST_KEY

PRODUCTION = {
    "TOKENWARDEN_ENCRYPTION_KEYS": TEST_KEY,
    "TOKENWARDEN_SECRET_KEY": "a-production-secret-key-of-40-characters!",
    "TOKENWARDEN_BASE_URL": "https://tokens.example.com",
    "TOKENWARDEN_MAIL_FROM": "Example <noreply@example.com>",
    "GOOGLE_CLIENT_ID": "123.apps.googleusercontent.com",
    "GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
}


@pytest.fixture
def production(database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A production-like environment (and nothing else of the caller's) on the test database."""
    env = {"DATABASE_URL": database_url, **PRODUCTION}
    for name in [n for n in os.environ if n.startswith(("TOKENWARDEN_", "GOOGLE_", "SMTP_", "REDIS_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def check_config(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["check-config"])
    out, err = capsys.readouterr()
    assert err == ""
    return status, out


def test_a_safe_configuration_exits_0(production: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out = check_config(capsys)
    assert status == 0
    assert out.splitlines()[0].split() == ["setting", "value", "source"]
    assert "TOKENWARDEN_SECRET_KEY" in out
    assert "nothing unsafe for production found" in out
    assert CLIENT_SECRET not in out
    assert TEST_KEY not in out


def test_unsafe_settings_and_a_provider_without_client_exit_1(
    production: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["user", "add", "ana@example.com"]) == 0
    add = ["mailbox", "add", "--user", "ana@example.com", "--address", "ana@gmail.test", "--refresh-token", "1//r"]
    assert main([*add, "--provider", "google"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("TOKENWARDEN_BASE_URL", "http://tokens.example.com")
    monkeypatch.delenv("TOKENWARDEN_SECRET_KEY")
    monkeypatch.delenv("GOOGLE_CLIENT_SECRET")
    status, out = check_config(capsys)
    assert status == 1
    assert "unsafe for production (3):" in out
    assert "TOKENWARDEN_SECRET_KEY is not set" in out
    assert "TOKENWARDEN_BASE_URL is plain http" in out
    assert "1 google mailbox(es) but no google client credentials" in out
    assert TEST_KEY not in out


def test_a_bad_value_is_reported_like_every_command_does(
    production: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENWARDEN_SCAN_INTERVAL_SECONDS", "often")
    assert main(["check-config"]) == 1
    assert "TOKENWARDEN_SCAN_INTERVAL_SECONDS: expected a number, got 'often'" in capsys.readouterr().err
