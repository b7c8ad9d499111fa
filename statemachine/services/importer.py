"""Bulk import of already-connected mailboxes: one JSON object per line.

This is how an app that already holds refresh tokens moves in, so it must be fast (batches of
rows, one INSERT per batch) and forgiving: a bad line is reported by its number and skipped, and
every good line is still imported. Users named in the file are created when missing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from statemachine.core.policy import Policy
from statemachine.core.secrets import TokenCipher
from statemachine.services import accounts
from statemachine.store.db import Sessionmaker

BATCH_SIZE = 1000
REQUIRED_KEYS = frozenset({"user", "provider", "address", "refresh_token"})
OPTIONAL_KEYS = frozenset({"access_token", "expires_in"})


@dataclass
class ImportReport:
    imported: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)


def _decoded(line: str | bytes) -> str:
    if isinstance(line, str):
        return line
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise accounts.InvalidInputError(
            f"not valid UTF-8 (byte {line[err.start]:#04x} at column {err.start + 1})"
        ) from None


def parse_line(line: str | bytes) -> accounts.NewMailbox:
    """Validate one line (text, or bytes read from a file in binary); the error message never repeats a token."""
    text = _decoded(line)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise accounts.InvalidInputError(f"not valid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise accounts.InvalidInputError("not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise accounts.InvalidInputError("expected a JSON object")
    missing = sorted(REQUIRED_KEYS - data.keys())
    if missing:
        raise accounts.InvalidInputError(f"missing key(s): {', '.join(missing)}")
    unknown = sorted(data.keys() - REQUIRED_KEYS - OPTIONAL_KEYS)
    if unknown:
        raise accounts.InvalidInputError(f"unknown key(s): {', '.join(ascii(key[:40]) for key in unknown)}")
    return accounts.new_mailbox(**data)


def _batches(lines: Iterable[str | bytes], report: ImportReport) -> Iterator[list[tuple[int, accounts.NewMailbox]]]:
    batch: list[tuple[int, accounts.NewMailbox]] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            batch.append((number, parse_line(text)))
        except accounts.InvalidInputError as err:
            report.problems.append((number, str(err)))
        if len(batch) >= BATCH_SIZE:
            yield batch
            batch = []
    if batch:
        yield batch


async def import_mailboxes(
    sessionmaker: Sessionmaker, lines: Iterable[str | bytes], cipher: TokenCipher, policy: Policy,
    clock: Callable[[], datetime], jitter: Callable[[], float] = random.random,
) -> ImportReport:  # fmt: skip
    """Import every valid line, one transaction per batch; report the rest by line number."""
    report = ImportReport()
    for batch in _batches(lines, report):
        async with sessionmaker() as session, session.begin():
            users = await accounts.user_ids(session, {m.user_email for _, m in batch}, create=True)
            ids = await accounts.reserve_ids(session, len(batch))
            now = clock()
            rows = [
                accounts.row_values(m, mailbox_id, users[m.user_email], cipher, policy, now, jitter())
                for (_, m), mailbox_id in zip(batch, ids, strict=True)
            ]
            inserted = await accounts.insert_mailboxes(session, rows)
            for (number, mailbox), mailbox_id in zip(batch, ids, strict=True):
                if mailbox_id not in inserted:
                    why = await accounts.why_not_inserted(session, mailbox, users[mailbox.user_email])
                    report.problems.append((number, why))
        report.imported += len(inserted)
    report.problems.sort()
    return report
