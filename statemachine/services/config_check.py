"""Is this configuration safe for production? The findings behind `tokenwarden check-config`.

The demo and the tests run on settings no production should have (no secret key, plain-http links,
shortened timings, a stand-in provider), so `serve` and `worker` only log these findings as warnings
at start; `check-config` exits non-zero on any. The settings are not listed again here: the checks
read what `read_settings` recorded. Secrets are shown as set/unset and passwords in URLs as `***`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.exc import DBAPIError, ProgrammingError

from statemachine.core.secrets import Secret
from statemachine.providers.registry import PROVIDERS
from statemachine.services.settings import Reading, Settings
from statemachine.store import queries
from statemachine.store.db import open_sessionmaker

logger = logging.getLogger(__name__)

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
DEMO_SCALE = 10  # a delay shortened more than tenfold below its default is the demo's or the tests', not production's
DATABASE_CHECK_SECONDS = 5.0
# every provider endpoint a setting may point elsewhere (a sandbox or a test stand-in)
ENDPOINT_ENVS = frozenset(
    endpoint.env for spec in PROVIDERS for endpoint in (spec.token_url, spec.auth_url, spec.revoke_url) if endpoint
)


@dataclass(frozen=True)
class ShownSetting:
    name: str
    value: str
    source: str  # "environment" or "default"


def redact_url(url: str) -> str:
    """The URL with any password replaced by *** (users and hosts stay: they are what an operator checks)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def shown(value: object) -> str:
    """A value as check-config prints it: never a secret, never a password."""
    if value is None or value == ():
        return "unset"
    if isinstance(value, Secret):
        return "set"
    if isinstance(value, tuple) and all(isinstance(item, Secret) for item in value):
        return f"set ({len(value)} key{'s' if len(value) > 1 else ''})"
    if isinstance(value, tuple):
        return ",".join(shown(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return redact_url(text) if "://" in text else text


def shown_settings(readings: Sequence[Reading]) -> list[ShownSetting]:
    return [ShownSetting(r.name, shown(r.value), "environment" if r.from_environment else "default") for r in readings]


def unsafe_settings(settings: Settings, readings: Sequence[Reading]) -> list[str]:
    """What is wrong for production in the settings alone (no database needed)."""
    findings = []
    if settings.secret_key is None:
        findings.append("TOKENWARDEN_SECRET_KEY is not set: the web app cannot sign sessions and links")
    if not settings.encryption_keys:
        findings.append("TOKENWARDEN_ENCRYPTION_KEYS is not set: no token can be stored (`tokenwarden generate-key`)")
    findings += _base_url(settings.base_url, readings)
    findings += [finding for reading in readings if (finding := _demo_only(reading))]
    if not _reading(readings, "TOKENWARDEN_MAIL_FROM").from_environment:
        findings.append(f"TOKENWARDEN_MAIL_FROM is not set: emails would come from {settings.mail_from}, "
                        "which mail servers reject or file as spam")  # fmt: skip
    return findings


def _reading(readings: Sequence[Reading], name: str) -> Reading:
    return next(reading for reading in readings if reading.name == name)


def _base_url(base_url: str, readings: Sequence[Reading]) -> list[str]:
    if not _reading(readings, "TOKENWARDEN_BASE_URL").from_environment:
        return [f"TOKENWARDEN_BASE_URL is not set: reconnect links in emails would point to {base_url}"]
    parts = urlsplit(base_url)
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
        return [f"TOKENWARDEN_BASE_URL is plain http ({base_url}): sessions and OAuth callbacks would travel "
                "unencrypted; serve it over https (TLS at your proxy)"]  # fmt: skip
    return []


def _demo_only(reading: Reading) -> str | None:
    """A provider pointed at a stand-in (the demo's sandbox), or a delay shortened to the demo's scale."""
    if not reading.from_environment:
        return None
    if reading.name in ENDPOINT_ENVS and reading.value != reading.default:
        return (f"{reading.name} is {shown(reading.value)}, not the provider's own endpoint (a sandbox or test "
                "stand-in?): users' refresh tokens would be sent there")  # fmt: skip
    if reading.name.endswith(("_SECONDS", "_DAYS")) and _shortened(reading.value, reading.default):
        return (f"{reading.name}={shown(reading.value)} is a demo or test timing "
                f"(under a tenth of the production default {shown(reading.default)})")  # fmt: skip
    return None


def _numbers(value: object) -> tuple[float, ...]:
    """A number or a tuple of numbers as floats; () for anything else."""
    items = value if isinstance(value, tuple) else (value,)
    if all(isinstance(item, int | float) and not isinstance(item, bool) for item in items):
        return tuple(float(item) for item in items)
    return ()


def _shortened(value: object, default: object) -> bool:
    values, defaults = _numbers(value), _numbers(default)
    if not values or not defaults:
        return False
    return min(values) * DEMO_SCALE < min(defaults)


def has_client(settings: Settings, provider: str) -> bool:
    """Whether `provider` is registered and its OAuth client credentials are configured."""
    client = settings.providers.get(provider)
    return client is not None and client.configured


def missing_clients(settings: Settings, mailboxes_by_provider: Mapping[str, int]) -> list[str]:
    """Providers that have mailboxes but no client credentials: every refresh of theirs fails as config."""
    return [
        f"{count} {provider} mailbox(es) but no {provider} client credentials: every refresh of theirs fails"
        for provider, count in sorted(mailboxes_by_provider.items())
        if count and not has_client(settings, provider)
    ]


async def database_findings(settings: Settings) -> list[str]:
    """Findings that need the database: providers with mailboxes and no client. An unreachable database is one."""
    if settings.database_url is None:
        return ["DATABASE_URL is not set"]
    try:
        async with (
            asyncio.timeout(DATABASE_CHECK_SECONDS),
            open_sessionmaker(settings.database_url) as sessionmaker,
            sessionmaker() as session,
        ):
            counts = await queries.mailboxes_by_provider(session)
    except ProgrammingError:
        return ["the database has no schema yet: run `tokenwarden migrate`"]
    except (DBAPIError, OSError, TimeoutError) as err:
        return [f"could not check which providers have mailboxes: the database did not answer ({type(err).__name__})"]
    return missing_clients(settings, counts)


async def production_findings(settings: Settings, readings: Sequence[Reading]) -> list[str]:
    return [*unsafe_settings(settings, readings), *await database_findings(settings)]


async def warn_about(settings: Settings, readings: Sequence[Reading], command: str) -> None:
    """Log each finding as a warning at start; the service starts anyway (the demo and tests run this way)."""
    for finding in await production_findings(settings, readings):
        logger.warning("unsafe for production: %s", finding, extra={"command": command, "check": "check-config"})
