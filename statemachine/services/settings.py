"""Configuration from environment variables, validated once at start.

Every bad value is reported, one line each, in a single `SettingsError`, so an operator fixes the
whole environment in one go. Secrets are wrapped in `Secret` so a repr of the settings is safe to log.
Which values are *required* depends on the command (`migrate` needs no OAuth client): commands call
`Settings.require(...)`. `read_settings` also returns every variable as it was read (its value and
whether the environment set it), which `tokenwarden check-config` shows without listing them again.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from statemachine.core.incident_rules import IncidentThresholds
from statemachine.core.policy import Policy
from statemachine.core.secrets import Secret
from statemachine.mail.mailer import validate_smtp_url
from statemachine.providers.registry import PROVIDERS
from statemachine.providers.spec import ProviderSpec
from statemachine.providers.urls import check_provider_url

T = TypeVar("T")

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")  # a name, a GUID or a verified domain: one path segment


class SettingsError(Exception):
    """One or more environment variables are missing or invalid; the message lists each one."""


@dataclass(frozen=True)
class ProviderClient:
    """Our OAuth client at one registered provider, read from the environment variables its spec names."""

    client_id: str | None
    client_secret: Secret | None
    token_url: str
    auth_url: str
    scopes: tuple[str, ...]
    tenant: str | None = None  # the spec's tenant setting, already filled into the default URLs
    revoke_url: str | None = None  # None: the provider cannot revoke one grant

    @property
    def configured(self) -> bool:
        """Both credentials are set; a provider without them gets no adapter (its cycles fail as config)."""
        return bool(self.client_id and self.client_secret)

    @classmethod
    def defaults(cls, spec: ProviderSpec) -> ProviderClient:
        tenant = spec.tenant.default if spec.tenant else None
        return cls(None, None, _in_tenant(spec.token_url.default, tenant), _in_tenant(spec.auth_url.default, tenant),
                   spec.scopes, tenant, spec.revoke_url.default if spec.revoke_url else None)  # fmt: skip


def _in_tenant(url: str, tenant: str | None) -> str:
    return url.replace("{tenant}", tenant) if tenant is not None else url


def _default_clients() -> dict[str, ProviderClient]:
    return {spec.name: ProviderClient.defaults(spec) for spec in PROVIDERS}


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(repr=False)  # URLs may carry passwords
    redis_url: str = field(repr=False)
    smtp_url: str = field(repr=False)
    providers: dict[str, ProviderClient] = field(default_factory=_default_clients)  # every registered provider
    encryption_keys: tuple[Secret, ...] = ()
    secret_key: Secret | None = None
    base_url: str = "http://127.0.0.1:8000"
    allowed_hosts: tuple[str, ...] = ()  # empty: the base URL's host, localhost and 127.0.0.1
    trusted_proxies: tuple[str, ...] = ()  # addresses whose X-Forwarded-* headers are believed
    mail_from: str = "Tokenwarden <tokenwarden@localhost>"
    retry_tries: int = 3
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 30.0
    http_timeout_seconds: float = 10.0
    lease_seconds: float = 300.0
    scan_interval_seconds: float = 60.0
    exact_timing_seconds: float = 600.0  # a next attempt due within this gets its own deferred job
    smtp_timeout_seconds: float = 30.0
    smtp_retry_tries: int = 3
    smtp_retry_base_seconds: float = 1.0
    outbox_interval_seconds: float = 5.0
    outbox_retry_base_seconds: float = 60.0
    outbox_max_attempts: int = 40
    reminder_days: tuple[float, ...] = (1.0, 3.0, 7.0)
    metrics_port: int = 9464
    worker_max_jobs: int = 40
    scan_batch_size: int = 500
    shutdown_grace_seconds: float = 20.0
    redis_outage_seconds: float = 120.0
    auth_failure_min_interval_seconds: float = 60.0
    user_emails: bool = True
    allowed_return_urls: tuple[str, ...] = ()  # where connect sessions may send the browser back to
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 10.0
    webhook_retry_base_seconds: float = 30.0
    webhook_disable_after_days: float = 5.0
    incidents: IncidentThresholds = field(default_factory=IncidentThresholds)
    policy: Policy = field(default_factory=Policy)

    def require(self, *names: str) -> None:
        """Fail with one line per missing value that the calling command needs."""
        missing = [f"{_ENV_NAMES[name]} is not set" for name in names if not getattr(self, name)]
        if missing:
            raise SettingsError("\n".join(missing))


_ENV_NAMES = {
    "database_url": "DATABASE_URL",
    "encryption_keys": "TOKENWARDEN_ENCRYPTION_KEYS",
    "secret_key": "TOKENWARDEN_SECRET_KEY",
}


@dataclass(frozen=True)
class Reading:
    """One variable as read: the parsed value (secrets stay wrapped), its default, and who set it."""

    name: str
    value: object
    default: object
    from_environment: bool


class _Reader:
    """Reads typed values from the environment, collecting every error instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.errors: list[str] = []
        self.readings: list[Reading] = []

    def get(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self.environ.get(name, "").strip()
        value = default
        if raw:
            try:
                value = parse(raw)
            except ValueError as err:
                self.errors.append(f"{name}: {err}")
        self.readings.append(Reading(name, value, default, bool(raw)))
        return value


def _number(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum:g}, got {raw}")
        return value

    return parse


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not raw.isdigit():
            raise ValueError(f"expected a whole number, got {raw!r}")
        if int(raw) < minimum:
            raise ValueError(f"must be at least {minimum}, got {raw}")
        return int(raw)

    return parse


def _delays(raw: str) -> tuple[float, ...]:
    parts = [p.strip() for p in raw.split(",")]
    parse = _number(1)
    return tuple(parse(p) for p in parts)


def _days(raw: str) -> tuple[float, ...]:
    parse = _number(0.00001)
    return tuple(sorted({parse(p.strip()) for p in raw.split(",")}))


def _ratio(raw: str) -> float:
    value = _number(0)(raw)
    if not 0 < value <= 1:
        raise ValueError(f"must be a fraction above 0 and at most 1, got {raw}")
    return value


def _switch(raw: str) -> bool:
    """on/off (also true/false, yes/no, 1/0)."""
    value = raw.lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"expected on or off, got {raw!r}")


def _port(raw: str) -> int:
    value = _whole(0)(raw)
    if value > 65535:
        raise ValueError(f"must be a TCP port (0 turns it off), got {raw}")
    return value


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ValueError(f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return parse


def _urls(raw: str) -> tuple[str, ...]:
    """Comma-separated http(s) URLs, each with a host."""
    parse = _url("https", "http")
    urls = tuple(parse(part.strip()) for part in raw.split(",") if part.strip())
    for url in urls:
        if not urlsplit(url).hostname:
            raise ValueError(f"{url!r} has no host")
    return urls


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def database_url(raw: str) -> str:
    """Accept postgres URLs, make them use the asyncpg driver, and take libpq's `sslmode` as asyncpg's `ssl`.

    Errors never repeat the URL: it may carry a password.
    """
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise ValueError("expected a postgresql:// or postgresql+asyncpg:// URL (the asyncpg driver is used)")
    try:
        url = make_url("postgresql+asyncpg://" + rest)
    except ValueError:
        raise ValueError(
            "the port is not a number (a password with @, : or / in it must be percent-encoded, e.g. @ as %40)"
        ) from None
    query = dict(url.query)
    if "sslmode" in query:
        mode = query.pop("sslmode")
        if mode not in SSL_MODES:
            raise ValueError(f"sslmode must be one of: {', '.join(SSL_MODES)}")
        query.setdefault("ssl", mode)
    return url.set(query=query).render_as_string(hide_password=False)


def _flag(raw: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, got {raw[:20]!r}")
    return raw.lower() == "true"


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    if not names or any(not name.isprintable() or " " in name for name in names):
        raise ValueError("expected a comma-separated list of names or addresses")
    return names


def _fernet_keys(raw: str) -> tuple[Secret, ...]:
    keys = []
    for position, key in enumerate((k.strip() for k in raw.split(",")), start=1):
        try:
            valid = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"key #{position} is not a Fernet key (32 url-safe base64-encoded bytes)")
        keys.append(Secret(key))
    return tuple(keys)


def _secret_key(raw: str) -> Secret:
    if len(raw) < 32:
        raise ValueError("must be at least 32 characters")
    return Secret(raw)


def _policy(env: _Reader) -> Policy:
    base = Policy()
    return Policy(
        degrade_after=env.get("TOKENWARDEN_DEGRADE_AFTER", base.degrade_after, _whole(1)),
        disconnect_after=env.get("TOKENWARDEN_DISCONNECT_AFTER", base.disconnect_after, _whole(1)),
        degrade_min_age_seconds=env.get(
            "TOKENWARDEN_DEGRADE_MIN_AGE_SECONDS", base.degrade_min_age_seconds, _number(0)
        ),
        disconnect_min_age_seconds=env.get(
            "TOKENWARDEN_DISCONNECT_MIN_AGE_SECONDS", base.disconnect_min_age_seconds, _number(0)
        ),
        cycle_delays_seconds=env.get("TOKENWARDEN_CYCLE_DELAYS_SECONDS", base.cycle_delays_seconds, _delays),
        confirm_permanent_seconds=env.get(
            "TOKENWARDEN_CONFIRM_PERMANENT_SECONDS", base.confirm_permanent_seconds, _number(0)
        ),
        refresh_lead_seconds=env.get("TOKENWARDEN_REFRESH_LEAD_SECONDS", base.refresh_lead_seconds, _number(1)),
        reprobe_seconds=env.get("TOKENWARDEN_REPROBE_SECONDS", base.reprobe_seconds, _number(1)),
        min_refresh_interval_seconds=env.get(
            "TOKENWARDEN_MIN_REFRESH_INTERVAL_SECONDS", base.min_refresh_interval_seconds, _number(1)
        ),
    )


def _provider_clients(env: _Reader, url: Callable[[str], str]) -> dict[str, ProviderClient]:
    """Each registered provider's client, from the environment variables its module names; `url` checks each
    endpoint (https only, but for loopback: `check_provider_url`)."""
    return {spec.name: _provider_client(env, spec, url) for spec in PROVIDERS}


def _provider_client(env: _Reader, spec: ProviderSpec, url: Callable[[str], str]) -> ProviderClient:
    tenant = env.get(spec.tenant.env, spec.tenant.default, _tenant) if spec.tenant else None
    scopes = env.get(spec.scopes_env, spec.scopes, _scopes(spec)) if spec.scopes_env else spec.scopes
    return ProviderClient(
        client_id=env.get(spec.client_id_env, None, str),
        client_secret=env.get(spec.client_secret_env, None, Secret),
        token_url=env.get(spec.token_url.env, _in_tenant(spec.token_url.default, tenant), url),
        auth_url=env.get(spec.auth_url.env, _in_tenant(spec.auth_url.default, tenant), url),
        scopes=scopes,
        tenant=tenant,
        revoke_url=env.get(spec.revoke_url.env, spec.revoke_url.default, url) if spec.revoke_url else None,
    )


def _tenant(raw: str) -> str:
    if not _TENANT.fullmatch(raw):
        raise ValueError("expected common, organizations, consumers, a tenant id or a domain name")
    return raw


def _scopes(spec: ProviderSpec) -> Callable[[str], tuple[str, ...]]:
    def parse(raw: str) -> tuple[str, ...]:
        scopes = tuple(dict.fromkeys(raw.split()))
        missing = [scope for scope in spec.oidc_scopes if scope not in scopes]
        if missing:
            raise ValueError(f"must keep {' '.join(missing)} (no id_token or refresh token without them)")
        return scopes

    return parse


def _incidents(env: _Reader) -> IncidentThresholds:
    base = IncidentThresholds()
    return IncidentThresholds(
        window_seconds=env.get("TOKENWARDEN_INCIDENT_WINDOW_SECONDS", base.window_seconds, _number(1)),
        failure_ratio=env.get("TOKENWARDEN_INCIDENT_FAILURE_RATIO", base.failure_ratio, _ratio),
        min_mailboxes=env.get("TOKENWARDEN_INCIDENT_MIN_MAILBOXES", base.min_mailboxes, _whole(1)),
        recovery_spread_seconds=env.get(
            "TOKENWARDEN_INCIDENT_RECOVERY_SPREAD_SECONDS", base.recovery_spread_seconds, _number(0)
        ),
    )


def _cross_checks(settings: Settings) -> list[str]:
    errors = []
    policy = settings.policy
    if policy.disconnect_after < policy.degrade_after:
        errors.append("TOKENWARDEN_DISCONNECT_AFTER must not be smaller than TOKENWARDEN_DEGRADE_AFTER")
    if policy.refresh_lead_seconds <= settings.scan_interval_seconds:
        errors.append(
            "TOKENWARDEN_REFRESH_LEAD_SECONDS must exceed TOKENWARDEN_SCAN_INTERVAL_SECONDS "
            "(or tokens expire between two scans)"
        )
    return errors


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read and validate every variable; raise SettingsError listing all problems."""
    return read_settings(environ)[0]


def read_settings(environ: Mapping[str, str]) -> tuple[Settings, tuple[Reading, ...]]:
    """`load_settings`, plus every variable as it was read, in the order the settings list them."""
    env = _Reader(environ)
    insecure = env.get("TOKENWARDEN_ALLOW_INSECURE_PROVIDER_URLS", False, _flag)

    def provider_url(raw: str) -> str:
        return check_provider_url(raw, allow_insecure=insecure)

    settings = Settings(
        database_url=env.get("DATABASE_URL", None, database_url),
        redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0", _url("redis", "rediss", "unix")),
        smtp_url=env.get("SMTP_URL", "smtp://127.0.0.1:25", validate_smtp_url),
        providers=_provider_clients(env, provider_url),
        encryption_keys=env.get("TOKENWARDEN_ENCRYPTION_KEYS", (), _fernet_keys),
        secret_key=env.get("TOKENWARDEN_SECRET_KEY", None, _secret_key),
        base_url=env.get("TOKENWARDEN_BASE_URL", "http://127.0.0.1:8000", _url("https", "http")).rstrip("/"),
        allowed_hosts=env.get("TOKENWARDEN_ALLOWED_HOSTS", (), _names),
        trusted_proxies=env.get("TOKENWARDEN_TRUSTED_PROXIES", (), _names),
        mail_from=env.get("TOKENWARDEN_MAIL_FROM", "Tokenwarden <tokenwarden@localhost>", str),
        retry_tries=env.get("TOKENWARDEN_RETRY_TRIES", 3, _whole(1)),
        retry_base_seconds=env.get("TOKENWARDEN_RETRY_BASE_SECONDS", 2.0, _number(0)),
        retry_max_seconds=env.get("TOKENWARDEN_RETRY_MAX_SECONDS", 30.0, _number(0)),
        http_timeout_seconds=env.get("TOKENWARDEN_HTTP_TIMEOUT_SECONDS", 10.0, _number(0.1)),
        lease_seconds=env.get("TOKENWARDEN_LEASE_SECONDS", 300.0, _number(1)),
        scan_interval_seconds=env.get("TOKENWARDEN_SCAN_INTERVAL_SECONDS", 60.0, _number(1)),
        exact_timing_seconds=env.get("TOKENWARDEN_EXACT_TIMING_SECONDS", 600.0, _number(0)),
        smtp_timeout_seconds=env.get("TOKENWARDEN_SMTP_TIMEOUT_SECONDS", 30.0, _number(0.1)),
        smtp_retry_tries=env.get("TOKENWARDEN_SMTP_RETRY_TRIES", 3, _whole(1)),
        smtp_retry_base_seconds=env.get("TOKENWARDEN_SMTP_RETRY_BASE_SECONDS", 1.0, _number(0)),
        outbox_interval_seconds=env.get("TOKENWARDEN_OUTBOX_INTERVAL_SECONDS", 5.0, _number(1)),
        outbox_retry_base_seconds=env.get("TOKENWARDEN_OUTBOX_RETRY_BASE_SECONDS", 60.0, _number(0)),
        outbox_max_attempts=env.get("TOKENWARDEN_OUTBOX_MAX_ATTEMPTS", 40, _whole(1)),
        reminder_days=env.get("TOKENWARDEN_REMINDER_DAYS", (1.0, 3.0, 7.0), _days),
        metrics_port=env.get("TOKENWARDEN_METRICS_PORT", 9464, _port),
        worker_max_jobs=env.get("TOKENWARDEN_WORKER_MAX_JOBS", 40, _whole(1)),
        scan_batch_size=env.get("TOKENWARDEN_SCAN_BATCH_SIZE", 500, _whole(1)),
        shutdown_grace_seconds=env.get("TOKENWARDEN_SHUTDOWN_GRACE_SECONDS", 20.0, _number(0)),
        redis_outage_seconds=env.get("TOKENWARDEN_REDIS_OUTAGE_SECONDS", 120.0, _number(1)),
        auth_failure_min_interval_seconds=env.get("TOKENWARDEN_AUTH_FAILURE_MIN_INTERVAL_SECONDS", 60.0, _number(1)),
        user_emails=env.get("TOKENWARDEN_USER_EMAILS", True, _switch),
        allowed_return_urls=env.get("TOKENWARDEN_ALLOWED_RETURN_URLS", (), _urls),
        webhook_allow_private=env.get("TOKENWARDEN_WEBHOOK_ALLOW_PRIVATE", False, _switch),
        webhook_timeout_seconds=env.get("TOKENWARDEN_WEBHOOK_TIMEOUT_SECONDS", 10.0, _number(0.1)),
        webhook_retry_base_seconds=env.get("TOKENWARDEN_WEBHOOK_RETRY_BASE_SECONDS", 30.0, _number(0)),
        webhook_disable_after_days=env.get("TOKENWARDEN_WEBHOOK_DISABLE_AFTER_DAYS", 5.0, _number(0.00001)),
        incidents=_incidents(env),
        policy=_policy(env),
    )
    errors = env.errors or _cross_checks(settings)
    if errors:
        raise SettingsError("\n".join(errors))
    return settings, tuple(env.readings)
