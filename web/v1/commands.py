"""What `tokenwarden api-key create|list|revoke` and `tokenwarden audit` run (their parsers: web/cli.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.cli.commands import database_session
from statemachine.cli.output import print_json, print_table
from web.tables import AccessTokenAudit
from web.v1.keys import ApiKeyError, create_key, list_keys, revoke_key

Env = Mapping[str, str]
AUDIT_LIMIT = 1000


@asynccontextmanager
async def _transaction(env: Env) -> AsyncIterator[AsyncSession]:
    async with database_session(env) as session, session.begin():
        yield session


def _expected(err: ApiKeyError) -> int:
    print(f"tokenwarden: error: {err}", file=sys.stderr)
    return 1


async def api_key_create(args: argparse.Namespace, env: Env) -> int:
    try:
        async with _transaction(env) as session:
            key = await create_key(session, args.name)
    except ApiKeyError as err:
        return _expected(err)
    print(key)
    print("Store this key now: it is shown only once (only its hash is kept).", file=sys.stderr)
    return 0


async def api_key_list(args: argparse.Namespace, env: Env) -> int:
    async with _transaction(env) as session:
        rows = await list_keys(session)
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ("name", "prefix", "created_at", "last_used_at", "revoked_at"))
    return 0


async def api_key_revoke(args: argparse.Namespace, env: Env) -> int:
    try:
        async with _transaction(env) as session:
            await revoke_key(session, args.name, datetime.now(UTC))
    except ApiKeyError as err:
        return _expected(err)
    print(f"key {args.name!r} revoked: requests with it now get 401")
    return 0


async def audit_rows(session: AsyncSession, mailbox: int | None, key: str | None) -> list[dict[str, Any]]:
    columns = (AccessTokenAudit.at, AccessTokenAudit.key_name, AccessTokenAudit.mailbox_id, AccessTokenAudit.cycle_ran)
    statement = select(*columns).order_by(AccessTokenAudit.id.desc()).limit(AUDIT_LIMIT)
    if mailbox is not None:
        statement = statement.where(AccessTokenAudit.mailbox_id == mailbox)
    if key is not None:
        statement = statement.where(AccessTokenAudit.key_name == key)
    rows = await session.execute(statement)
    return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r._mapping.items()} for r in rows]


async def audit(args: argparse.Namespace, env: Env) -> int:
    async with _transaction(env) as session:
        rows = await audit_rows(session, args.mailbox, args.key)
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ("at", "key_name", "mailbox_id", "cycle_ran"))
    return 0
