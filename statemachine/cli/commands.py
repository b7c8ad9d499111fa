"""The core CLI commands: each takes the parsed arguments and the environment, prints, returns an exit code."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from alembic.util.exc import CommandError
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from statemachine.cli.output import print_json, print_table
from statemachine.core.states import Event
from statemachine.services import accounts
from statemachine.services.config_check import production_findings, shown_settings
from statemachine.services.cycle import CycleResult, run_cycle
from statemachine.services.importer import ImportReport, import_mailboxes
from statemachine.services.operations import operator_action
from statemachine.services.removal import rotate_revocation_keys
from statemachine.services.runtime import open_runtime
from statemachine.services.settings import Settings, load_settings, read_settings
from statemachine.services.unit_of_work import Outcome
from statemachine.services.webhook_endpoints import rotate_endpoint_keys
from statemachine.store import outbox as outbox_rows, queries
from statemachine.store.db import open_sessionmaker
from statemachine.store.migrations import migrate as run_migrations
from statemachine.store.models import Mailbox

Env = Mapping[str, str]
CLI_ACTOR = "cli"


def _database_settings(env: Env) -> Settings:
    settings = load_settings(env)
    settings.require("database_url")
    return settings


async def migrate(args: argparse.Namespace, env: Env) -> int:
    settings = _database_settings(env)
    assert settings.database_url is not None
    if args.downgrade:
        try:
            await run_migrations(settings.database_url, "downgrade", args.downgrade)
        except CommandError:
            raise accounts.InvalidInputError(f"no schema revision {args.downgrade[:40]!r} (e.g. base, 0002)") from None
        print(f"database downgraded to {args.downgrade}")
    else:
        await run_migrations(settings.database_url)
        print("database is at the newest schema")
    return 0


async def user_add(args: argparse.Namespace, env: Env) -> int:
    async with database_session(env) as session, session.begin():
        user = await accounts.add_user(session, args.email, args.name, admin=args.admin)
    print(user.id)
    return 0


def _refresh_token_argument(value: str) -> str:
    return sys.stdin.readline().strip() if value == "-" else value


async def mailbox_add(args: argparse.Namespace, env: Env) -> int:
    mailbox = accounts.new_mailbox(
        user=args.user,
        provider=args.provider,
        address=args.address,
        refresh_token=_refresh_token_argument(args.refresh_token),
        access_token=args.access_token,
        expires_in=args.expires_in,
    )
    async with open_runtime(load_settings(env)) as rt, rt.sessionmaker() as session, session.begin():
        users = await accounts.user_ids(session, {mailbox.user_email}, create=False)
        if mailbox.user_email not in users:
            raise accounts.UnknownUserError(mailbox.user_email)
        (mailbox_id,) = await accounts.reserve_ids(session, 1)
        now = datetime.now(UTC)
        row = accounts.row_values(
            mailbox, mailbox_id, users[mailbox.user_email], rt.cipher, rt.settings.policy, now, 0.0
        )
        if not await accounts.insert_mailboxes(session, [row]):
            why = await accounts.why_not_inserted(session, mailbox, users[mailbox.user_email])
            raise accounts.InvalidInputError(why)
    print(mailbox_id)
    return 0


def mailbox_import(args: argparse.Namespace, env: Env) -> int:
    settings = load_settings(env)
    # binary: each line is decoded on its own, so one line of bad UTF-8 is reported and skipped
    stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    with stream:
        report = asyncio.run(_import(settings, stream))
    for number, problem in report.problems:
        print(f"line {number}: {problem}", file=sys.stderr)
    print(f"imported {report.imported} mailbox(es), skipped {len(report.problems)} line(s)")
    return 1 if report.problems else 0


async def _import(settings: Settings, lines: Iterable[bytes]) -> ImportReport:
    async with open_runtime(settings) as rt:
        return await import_mailboxes(rt.sessionmaker, lines, rt.cipher, rt.settings.policy, lambda: datetime.now(UTC))


@asynccontextmanager
async def database_session(env: Env) -> AsyncIterator[AsyncSession]:
    """A session on DATABASE_URL alone (no encryption key needed), for commands that only read or write rows."""
    settings = _database_settings(env)
    assert settings.database_url is not None
    async with open_sessionmaker(settings.database_url) as sessionmaker, sessionmaker() as session:
        yield session


async def _read(env: Env, query: Any, *args: Any) -> Any:
    async with database_session(env) as session:
        return await query(session, *args)


async def check_config(args: argparse.Namespace, env: Env) -> int:
    """Every setting with its source, then what is unsafe for production; exit 1 if anything is."""
    settings, readings = read_settings(env)
    rows = [{"setting": line.name, "value": line.value, "source": line.source} for line in shown_settings(readings)]
    print_table(rows, ("setting", "value", "source"))
    findings = await production_findings(settings, readings)
    if not findings:
        print("\nnothing unsafe for production found")
        return 0
    print(f"\nunsafe for production ({len(findings)}):")
    for finding in findings:
        print(f"  - {finding}")
    return 1


async def mailbox_list(args: argparse.Namespace, env: Env) -> int:
    rows = await _read(env, queries.list_mailboxes, args.state, args.limit)
    if args.json:
        print_json(rows)
        return 0
    print_table(rows, ("id", "address", "provider", "state", "token_refresh_attempt_count", "next_refresh_at"))
    if len(rows) == args.limit:
        print(f"(showing the first {args.limit}; use --limit or --state to see others)", file=sys.stderr)
    return 0


async def mailbox_show(args: argparse.Namespace, env: Env) -> int:
    row = await _read(env, queries.show_mailbox, args.id)
    if args.json:
        print_json(row)
    else:
        for key, value in row.items():
            print(f"{key:28} {value if value is not None else '-'}")
    return 0


async def _rows(args: argparse.Namespace, env: Env, query: Any, key: Any, columns: tuple[str, ...]) -> int:
    rows = await _read(env, query, key)
    if args.json:
        print_json(rows)
    else:
        print_table(rows, columns)
    return 0


async def history(args: argparse.Namespace, env: Env) -> int:
    return await _rows(
        args, env, queries.history, args.id, ("at", "event", "from_state", "to_state", "actor", "reason")
    )


async def outbox(args: argparse.Namespace, env: Env) -> int:
    return await _rows(args, env, queries.outbox, args.mailbox, ("id", "kind", "mailbox_id", "recipient", "status"))


async def outbox_retry(args: argparse.Namespace, env: Env) -> int:
    async with database_session(env) as session, session.begin():
        count = await outbox_rows.requeue_failed(session, args.since)
    print(f"re-queued {count} failed email(s); the worker sends them at its next outbox sweep")
    return 0


def describe(outcome: Outcome) -> str:
    """One line for people: the event, the move, the reason, what comes next."""
    move = (
        outcome.from_state if outcome.from_state == outcome.to_state else f"{outcome.from_state} -> {outcome.to_state}"
    )
    parts = [f"mailbox {outcome.mailbox_id}: {outcome.event} ({move})"]
    if outcome.error and outcome.to_state != "healthy":
        parts.append(f"last error: {outcome.error}")
    parts.append(f"next refresh: {outcome.next_refresh_at.isoformat() if outcome.next_refresh_at else 'none'}")
    parts.append(f"emails queued: {', '.join(outcome.emails) or 'none'}")
    return "; ".join(parts)


def _result_json(result: CycleResult) -> dict[str, Any]:
    outcome = result.outcome
    return {
        "mailbox_id": result.mailbox_id,
        "status": result.status,
        "event": outcome.event if outcome else None,
        "from_state": outcome.from_state if outcome else None,
        "to_state": outcome.to_state if outcome else None,
        "error": result.verdict.summary if result.verdict else None,
        "emails_queued": list(outcome.emails) if outcome else [],
        "next_refresh_at": outcome.next_refresh_at.isoformat() if outcome and outcome.next_refresh_at else None,
        "seconds": round(result.seconds, 3),
    }


async def refresh(args: argparse.Namespace, env: Env) -> int:
    async with open_runtime(load_settings(env)) as rt:
        result = await run_cycle(rt.cycle_deps(), args.id, actor=CLI_ACTOR)
    if args.json:
        print_json(_result_json(result))
    elif result.outcome is not None:
        print(describe(result.outcome))
    elif result.status == "busy":
        print(f"mailbox {args.id}: another refresh cycle holds it right now; nothing done")
    else:
        print(f"mailbox {args.id}: changed by someone else during the cycle; the outcome was not applied")
    return 0 if result.status in ("refreshed", "failed") else 1


async def _operator(args: argparse.Namespace, env: Env, event: Event) -> int:
    async with open_runtime(load_settings(env)) as rt:
        outcome = await operator_action(
            rt.sessionmaker, rt.events, args.id, event, f"operator:{CLI_ACTOR}", args.reason
        )
    print(describe(outcome))
    return 0


async def mailbox_retry_now(args: argparse.Namespace, env: Env) -> int:
    return await _operator(args, env, Event.OPS_RETRY_NOW)


async def mailbox_disconnect(args: argparse.Namespace, env: Env) -> int:
    return await _operator(args, env, Event.OPS_DISCONNECT)


ROTATE_BATCH = 1000


async def rotate_keys(args: argparse.Namespace, env: Env) -> int:
    """Re-encrypt every stored token under the newest key, so an old key can be retired.

    In batches of rows, one short transaction each: a large table is never locked whole, and an
    interrupted run can simply be started again (rotating twice is harmless).
    """
    done, after = 0, 0
    async with open_runtime(load_settings(env)) as rt:
        while True:
            async with rt.sessionmaker() as session, session.begin():
                batch = (
                    await session.scalars(
                        select(Mailbox)
                        .where(Mailbox.id > after)
                        .order_by(Mailbox.id)
                        .limit(ROTATE_BATCH)
                        .with_for_update()
                    )
                ).all()
                for mailbox in batch:
                    mailbox.refresh_token_ciphertext = rt.cipher.rotate(mailbox.refresh_token_ciphertext)
                    if mailbox.access_token_ciphertext is not None:
                        mailbox.access_token_ciphertext = rt.cipher.rotate(mailbox.access_token_ciphertext)
            if not batch:
                break
            done, after = done + len(batch), batch[-1].id
        async with rt.sessionmaker() as session, session.begin():
            endpoints = await rotate_endpoint_keys(session, rt.cipher)
            revocations = await rotate_revocation_keys(session, rt.cipher)
    print(f"re-encrypted the tokens of {done} mailbox(es), {revocations} pending revocation(s) "
          f"and {endpoints} webhook secret(s) under the first key")  # fmt: skip
    return 0


def generate_key(args: argparse.Namespace, env: Env) -> int:
    print(Fernet.generate_key().decode())
    return 0
