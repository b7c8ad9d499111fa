"""The long-lived resources of one process (engine, HTTP client, providers, cipher), opened once.

The CLI, the worker and the web app each open one `Runtime` at start and close it at exit; jobs and
requests borrow from it. One HTTP client per process: creating one per request costs more CPU than
the refresh itself (README, Measurements).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx

from statemachine.core.secrets import TokenCipher
from statemachine.providers.oauth import OAuthProvider, RetryPolicy, make_http_client
from statemachine.providers.registry import PROVIDERS
from statemachine.services.cycle import CycleDeps
from statemachine.services.settings import Settings
from statemachine.services.unit_of_work import EventContext
from statemachine.store.cycle_rows import SharedStatements
from statemachine.store.db import Sessionmaker, make_engine, make_sessionmaker
from statemachine.store.incidents import IncidentGuard
from statemachine.store.statements import StatementPool, statement_pool


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    sessionmaker: Sessionmaker
    http: httpx.AsyncClient
    cipher: TokenCipher
    providers: dict[str, OAuthProvider]
    events: EventContext
    statements: StatementPool  # plain asyncpg connections for a cycle's hot statements and the access-token route
    shared: SharedStatements  # cycles' takeovers and routine writes, sent together per loop turn on `statements`
    incidents: IncidentGuard | None = None

    def cycle_deps(self) -> CycleDeps:
        """The same dependencies, incident guard included, for the CLI's `refresh` and the worker's job."""
        return CycleDeps(
            self.sessionmaker,
            self.statements,
            self.shared,
            self.providers,
            self.cipher,
            self.events,
            self.settings.lease_seconds,
            observer=self.incidents,
        )


def build_providers(settings: Settings, http: httpx.AsyncClient) -> dict[str, OAuthProvider]:
    """One adapter per registered provider with client credentials; one without them is left out (its cycles fail
    as config)."""
    retry = RetryPolicy(settings.retry_tries, settings.retry_base_seconds, settings.retry_max_seconds)
    adapters = {}
    for spec in PROVIDERS:
        client = settings.providers[spec.name]
        if not (client.client_id and client.client_secret):
            continue
        adapters[spec.name] = OAuthProvider(
            http,
            spec=spec,
            client_id=client.client_id,
            client_secret=client.client_secret,
            token_url=client.token_url,
            auth_url=client.auth_url,
            scopes=client.scopes,
            tenant=client.tenant,
            revoke_url=client.revoke_url,
            retry=retry,
            deadline_seconds=settings.http_timeout_seconds * 2,
        )
    return adapters


def pool_size_for(worker_max_jobs: int) -> int:
    """Each pool's size (the engine's overflow doubles its own): a quarter of the cycle slots and 4, at least 10.

    A routine cycle holds no connection of its own (its takeover and its write are shared per event-loop turn,
    store/cycle_rows.py), and no cycle holds one across its provider call: one is held only for a cycle's own
    transaction (a failure, a state change) or a rotated token. Cycles beyond that wait for a connection: 14 per
    pool for the default 40 slots, as many as 10 slots had when each cycle held its own.
    """
    return max(10, worker_max_jobs // 4 + 4)


@asynccontextmanager
async def open_runtime(settings: Settings, *, pre_ping: bool = True) -> AsyncIterator[Runtime]:
    settings.require("database_url", "encryption_keys")
    assert settings.database_url is not None
    pool_size = pool_size_for(settings.worker_max_jobs)
    async with AsyncExitStack() as stack:
        engine = make_engine(settings.database_url, pool_size=pool_size, pre_ping=pre_ping)
        stack.push_async_callback(engine.dispose)
        statements = await stack.enter_async_context(statement_pool(settings.database_url, max_size=pool_size))
        http = make_http_client(settings.http_timeout_seconds)
        stack.push_async_callback(http.aclose)
        yield Runtime(
            settings=settings,
            sessionmaker=make_sessionmaker(engine),
            http=http,
            cipher=TokenCipher(settings.encryption_keys),
            providers=build_providers(settings, http),
            events=EventContext.from_settings(settings),
            statements=statements,
            shared=SharedStatements(statements),
            incidents=IncidentGuard(settings.incidents),
        )
