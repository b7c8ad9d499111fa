"""Shared pytest setup: the session's real PostgreSQL and Redis (tests/services.py) and the migrated database."""

from tests.database import database_url, env, migrated_database, runtime, sessionmaker, settings  # noqa: F401
from tests.edges import arq_redis, microsoft_sandbox, provider, sandbox  # noqa: F401
from tests.services import make_database, postgres_admin_url, redis_url  # noqa: F401
