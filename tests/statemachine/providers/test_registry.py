"""The provider registry: what each provider declares, and that every other place asks the registry."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from statemachine.cli.main import main
from statemachine.core.classify import GENERIC_RULES
from statemachine.mail.emails import provider_display_name
from statemachine.providers import microsoft, registry
from statemachine.providers.spec import ProviderSpec
from statemachine.services.settings import SettingsError, load_settings
from statemachine.store.models import Mailbox, one_of
from web import connect
from web.app import security_headers

ROOT = Path(__file__).resolve().parents[3]
SPECS = registry.PROVIDERS


def test_something_is_registered() -> None:
    assert tuple(spec.name for spec in SPECS) == registry.NAMES
    assert "google" in registry.NAMES


@pytest.mark.parametrize("spec", SPECS, ids=registry.NAMES)
def test_every_registered_provider_declares_everything(spec: ProviderSpec) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,15}", spec.name)
    assert spec.label
    assert spec.speaker != GENERIC_RULES.speaker  # failure reasons name the provider
    for url in (spec.token_url.default, spec.auth_url.default):
        assert urlsplit(url).scheme == "https"
        assert urlsplit(url).netloc
    assert spec.scopes
    assert all(scope and " " not in scope for scope in spec.scopes)
    assert spec.subject_claims
    assert "openid" in spec.oidc_scopes  # the id_token names the account
    assert spec.consent_params.get("response_type") == "code"
    assert registry.get(spec.name) is spec
    assert registry.label(spec.name) == provider_display_name(spec.name) == spec.label


def test_environment_variable_names_are_distinct() -> None:
    names = [
        env
        for spec in SPECS
        for env in (spec.token_url.env, spec.auth_url.env, spec.client_id_env, spec.client_secret_env,
                    spec.tenant.env if spec.tenant else None, spec.scopes_env)
        if env is not None
    ]  # fmt: skip
    assert len(names) == len(set(names))


def test_the_existing_google_variables_keep_working() -> None:
    settings = load_settings(
        {
            "GOOGLE_CLIENT_ID": "id",
            "GOOGLE_CLIENT_SECRET": "secret-value",
            "GOOGLE_TOKEN_URL": "http://127.0.0.1:9/token",
            "GOOGLE_AUTH_URL": "http://127.0.0.1:9/authorize",
        }
    )
    google = settings.providers["google"]
    assert (google.client_id, google.token_url, google.auth_url) == (
        "id",
        "http://127.0.0.1:9/token",
        "http://127.0.0.1:9/authorize",
    )
    assert google.client_secret is not None
    assert google.client_secret.reveal() == "secret-value"
    assert "secret-value" not in repr(settings)


def test_settings_read_each_provider_from_its_own_variables_and_report_every_bad_one() -> None:
    environ = {spec.token_url.env: "ftp://nope" for spec in SPECS} | {spec.auth_url.env: "nope" for spec in SPECS}
    with pytest.raises(SettingsError) as caught:
        load_settings({**environ, "TOKENWARDEN_RETRY_TRIES": "three"})
    named = {line.split(":")[0] for line in str(caught.value).splitlines()}
    assert named == set(environ) | {"TOKENWARDEN_RETRY_TRIES"}
    assert set(load_settings({}).providers) == set(registry.NAMES)


def test_an_unregistered_provider_is_refused_with_the_accepted_ones() -> None:
    with pytest.raises(registry.UnknownProviderError, match="must be one of: google, microsoft"):
        registry.get("yahoo")
    assert registry.find("yahoo") is None
    assert registry.label("yahoo") == "Yahoo"


def test_microsoft_is_registered_with_its_tenant_in_the_default_urls() -> None:
    assert registry.get("microsoft") is microsoft.SPEC
    defaults = load_settings({}).providers["microsoft"]
    assert defaults.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    chosen = load_settings({"MICROSOFT_TENANT": "organizations"}).providers["microsoft"]
    assert chosen.auth_url == "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize"
    assert chosen.tenant == "organizations"


def test_microsoft_scopes_may_be_replaced_but_keep_the_openid_ones() -> None:
    graph = "openid profile offline_access https://graph.microsoft.com/Mail.ReadWrite"
    assert load_settings({"MICROSOFT_SCOPES": graph}).providers["microsoft"].scopes == tuple(graph.split())
    with pytest.raises(SettingsError, match="MICROSOFT_SCOPES: must keep offline_access"):
        load_settings({"MICROSOFT_SCOPES": "openid profile https://graph.microsoft.com/Mail.Read"})
    with pytest.raises(SettingsError, match="MICROSOFT_TENANT"):
        load_settings({"MICROSOFT_TENANT": "../evil"})


def test_the_check_constraint_lists_the_registered_providers() -> None:
    (check,) = [c for c in Mailbox.__table__.constraints if c.name == "ck_mailboxes_provider"]
    assert str(check.sqltext) == one_of("provider", registry.NAMES)


async def test_the_migrated_database_accepts_exactly_the_registered_providers(database_url: str) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            definition = await conn.scalar(
                text("select pg_get_constraintdef(oid) from pg_constraint where conname = 'ck_mailboxes_provider'")
            )
    finally:
        await engine.dispose()
    assert set(re.findall(r"'([a-z0-9_]+)'", definition)) == set(registry.NAMES)


def test_the_cli_refuses_an_unknown_provider_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["mailbox", "add", "--user", "o@example.test", "--provider", "yahoo", "--address", "a@b.test"]
    assert main([*argv, "--refresh-token", "x"]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"tokenwarden: error: provider must be one of: {', '.join(registry.NAMES)}\n")


def test_one_callback_route_per_registered_provider() -> None:
    paths = {route.path for route in connect.routes if route.path.startswith("/auth/")}  # type: ignore[attr-defined]
    assert paths == {f"/auth/{name}/callback" for name in registry.NAMES}


def test_forms_may_post_to_every_registered_providers_consent_page() -> None:
    settings = load_settings({spec.auth_url.env: f"https://{spec.name}.consent.test/auth" for spec in SPECS})
    csp = dict(security_headers(settings))[b"content-security-policy"].decode()
    form_action = next(part for part in csp.split("; ") if part.startswith("form-action"))
    assert form_action.split()[1:] == ["'self'", *sorted(f"https://{spec.name}.consent.test" for spec in SPECS)]


def test_production_code_names_providers_only_in_their_modules() -> None:
    """Adding a provider is its module in statemachine/providers/ (and a migration), nothing else."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ("statemachine", "jobs", "web")
        for path in sorted((ROOT / package).rglob("*.py"))
        if "providers" not in path.relative_to(ROOT / package).parts[:1]
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for name in registry.NAMES
        if f'"{name}"' in line or f"'{name}'" in line
    ]
    assert found == []
