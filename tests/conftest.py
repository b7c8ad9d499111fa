"""Shared pytest setup: the session's real PostgreSQL and Redis (tests/services.py), the migrated database, and
the markers that sort the suite by cost (`make test-fast` runs only `pure`).

Markers are derived, not hand-kept: a test that uses the database or Redis fixtures (directly or through another
fixture) is `database` / `redis`; modules that start real processes or a browser say so with `pytestmark`
(`slow`, `browser`); every other test is `pure` — no server, no subprocess — and runs in seconds.
"""

import pytest

from tests.database import database_url, env, migrated_database, runtime, sessionmaker, settings  # noqa: F401
from tests.edges import arq_redis, microsoft_sandbox, provider, sandbox  # noqa: F401
from tests.services import make_database, postgres_admin_url, redis_url  # noqa: F401

SERVICE_MARKERS = {"postgres_admin_url": "database", "redis_url": "redis"}
COSTLY = {"database", "redis", "slow", "browser"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        for fixture, marker in SERVICE_MARKERS.items():
            if fixture in fixtures:
                item.add_marker(marker)
        if not COSTLY & {mark.name for mark in item.iter_markers()}:
            item.add_marker("pure")
