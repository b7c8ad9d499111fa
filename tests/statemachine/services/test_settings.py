"""Configuration: defaults, one clear line per bad value, and no secret in a repr."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from statemachine.providers.registry import PROVIDERS
from statemachine.services.settings import ProviderClient, SettingsError, load_settings

KEY = Fernet.generate_key().decode()


def test_defaults_follow_the_design() -> None:
    settings = load_settings({})
    policy = settings.policy
    assert (settings.retry_tries, settings.retry_base_seconds) == (3, 2.0)
    assert (policy.degrade_after, policy.disconnect_after, policy.confirm_permanent_seconds) == (2, 3, 60.0)
    google = settings.providers["google"]
    assert google.token_url == "https://oauth2.googleapis.com/token"
    assert google.auth_url.startswith("https://accounts.google.com/")
    assert (google.client_id, google.client_secret, google.configured) == (None, None, False)


def test_every_bad_value_is_reported_on_its_own_line() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                "DATABASE_URL": "mysql://db/app",
                "REDIS_URL": "http://cache",
                "TOKENWARDEN_RETRY_TRIES": "three",
                "TOKENWARDEN_ENCRYPTION_KEYS": f"{KEY},not-a-key",
                "TOKENWARDEN_CYCLE_DELAYS_SECONDS": "60,,900",
                "TOKENWARDEN_CONFIRM_PERMANENT_SECONDS": "-1",
                "TOKENWARDEN_SECRET_KEY": "short",
            }
        )
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "DATABASE_URL",
        "REDIS_URL",
        "TOKENWARDEN_ENCRYPTION_KEYS",
        "TOKENWARDEN_SECRET_KEY",
        "TOKENWARDEN_RETRY_TRIES",
        "TOKENWARDEN_CYCLE_DELAYS_SECONDS",
        "TOKENWARDEN_CONFIRM_PERMANENT_SECONDS",
    ]
    assert "key #2" in str(caught.value)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_postgres_urls_use_asyncpg(given: str, expected: str) -> None:
    assert load_settings({"DATABASE_URL": given}).database_url == expected


def test_cross_checks() -> None:
    with pytest.raises(SettingsError, match="must not be smaller"):
        load_settings({"TOKENWARDEN_DEGRADE_AFTER": "4", "TOKENWARDEN_DISCONNECT_AFTER": "3"})
    with pytest.raises(SettingsError, match="must exceed TOKENWARDEN_SCAN_INTERVAL_SECONDS"):
        load_settings({"TOKENWARDEN_REFRESH_LEAD_SECONDS": "60", "TOKENWARDEN_SCAN_INTERVAL_SECONDS": "120"})


def test_required_values_are_named_per_command() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({}).require("database_url", "encryption_keys")
    assert str(caught.value).splitlines() == ["DATABASE_URL is not set", "TOKENWARDEN_ENCRYPTION_KEYS is not set"]


def test_repr_shows_no_secret() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://app:db-PASSWORD@h/db",
            "GOOGLE_CLIENT_SECRET": "client-SECRET",
            "TOKENWARDEN_ENCRYPTION_KEYS": KEY,
            "TOKENWARDEN_SECRET_KEY": "s" * 40,
            "SMTP_URL": "smtp://u:smtp-PASSWORD@mail:587",
        }
    )
    text = repr(settings)
    for secret in ("db-PASSWORD", "client-SECRET", KEY, "s" * 40, "smtp-PASSWORD"):
        assert secret not in text


def test_the_minimum_refresh_interval_is_configurable_for_time_compressed_runs() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert load_settings({}).policy.next_refresh_at(now, 30, 0.0) == now + timedelta(seconds=60)
    fast = {"TOKENWARDEN_REFRESH_LEAD_SECONDS": "10", "TOKENWARDEN_SCAN_INTERVAL_SECONDS": "1"}
    assert load_settings(fast).policy.next_refresh_at(now, 30, 0.0) == now + timedelta(seconds=60)
    policy = load_settings({**fast, "TOKENWARDEN_MIN_REFRESH_INTERVAL_SECONDS": "1"}).policy
    assert policy.next_refresh_at(now, 30, 0.0) == now + timedelta(seconds=20)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://oauth2.example/token", True),
        ("http://127.0.0.1:8080/token", True),
        ("http://localhost/token", True),
        ("http://[::1]:9/token", True),
        ("http://oauth2.example/token", False),
        ("http://10.0.0.5/token", False),
        ("ftp://oauth2.example/token", False),
    ],
)
def test_provider_urls_are_https_except_on_this_machine(url: str, allowed: bool) -> None:
    """Every registered provider's endpoints (token, auth, revoke) go through the same check."""
    names = [
        endpoint.env
        for spec in PROVIDERS
        for endpoint in (spec.token_url, spec.auth_url, spec.revoke_url)
        if endpoint is not None
    ]
    assert {"GOOGLE_TOKEN_URL", "GOOGLE_AUTH_URL", "GOOGLE_REVOKE_URL", "MICROSOFT_TOKEN_URL"} <= set(names)

    def read(client: ProviderClient) -> list[str | None]:
        return [client.token_url, client.auth_url, client.revoke_url]

    if allowed:
        settings = load_settings(dict.fromkeys(names, url))
        google, microsoft = settings.providers["google"], settings.providers["microsoft"]
        assert (read(google), read(microsoft)) == ([url] * 3, [url, url, None])
        return
    with pytest.raises(SettingsError) as caught:
        load_settings(dict.fromkeys(names, url))
    assert sorted(line.split(":")[0] for line in str(caught.value).splitlines()) == sorted(names)
    if url.startswith("http:"):  # a lab network may lift the rule
        lab = load_settings({**dict.fromkeys(names, url), "TOKENWARDEN_ALLOW_INSECURE_PROVIDER_URLS": "true"})
        assert lab.providers["google"].token_url == url
        assert lab.providers["microsoft"].token_url == url
