"""`tokenwarden`: the operators' command line.

Core commands live here; the worker and the web app add theirs through the entry-point group
`tokenwarden.commands` (each entry is a `register(subparsers)` function), so this package never
imports `jobs/` or `web/`. Every expected failure ends in one line on stderr and exit status 1
(argparse's usage errors: 2); no traceback, no secret.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import entry_points

from statemachine.cli.lazy import Handler, lazy
from statemachine.core.states import State
from statemachine.providers import registry
from statemachine.services.logs import configure_logging, log_level

OWN_PACKAGES = {"statemachine", "jobs", "web", "devkit"}


def _core(name: str) -> Handler:
    """The handler `name` of statemachine/cli/commands.py, imported when its command runs."""
    return lazy(f"statemachine.cli.commands:{name}")


MAX_ID = 2**63 - 1  # PostgreSQL's bigint


def mailbox_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        raise argparse.ArgumentTypeError(
            f"a mailbox id is a positive whole number, not {text[:40]!r} (at most {MAX_ID})"
        )
    return int(text)


def moment(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time like 2026-11-30T10:00, not {text[:40]!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _add_mailbox_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mailbox = sub.add_parser("mailbox", help="connected mailboxes").add_subparsers(dest="action", required=True)
    add = mailbox.add_parser("add", help="connect a mailbox from an existing refresh token; prints the new id")
    add.add_argument("--user", required=True, help="owner's email (the user must exist)")
    add.add_argument("--provider", required=True, help=f"one of: {', '.join(registry.NAMES)}")
    add.add_argument("--address", required=True, help="the mailbox's email address")
    add.add_argument("--refresh-token", required=True, help="the refresh token, or - to read it from stdin")
    add.add_argument("--access-token")
    add.add_argument("--expires-in", type=int, help="seconds the access token stays valid")
    add.set_defaults(handler=_core("mailbox_add"))
    bulk = mailbox.add_parser("import", help="bulk import: one JSON object per line (- for stdin)")
    bulk.add_argument("file")
    bulk.set_defaults(handler=_core("mailbox_import"))
    listing = mailbox.add_parser("list", help="list mailboxes")
    listing.add_argument("--state", choices=[s.value for s in State])
    listing.add_argument("--limit", type=mailbox_id, default=1000, help="at most this many (default 1000)")
    _json_flag(listing)
    listing.set_defaults(handler=_core("mailbox_list"))
    show = mailbox.add_parser("show", help="one mailbox's connection state")
    show.add_argument("id", type=mailbox_id)
    _json_flag(show)
    show.set_defaults(handler=_core("mailbox_show"))
    for name, handler, text in (
        ("retry-now", _core("mailbox_retry_now"), "schedule a refresh now (recorded as an operator action)"),
        ("disconnect", _core("mailbox_disconnect"), "disconnect the mailbox (recorded as an operator action)"),
    ):
        action = mailbox.add_parser(name, help=text)
        action.add_argument("id", type=mailbox_id)
        action.add_argument("--reason", help="why, in plain words (stored in the history)")
        action.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenwarden", description="Keep connected mailboxes' OAuth tokens alive.")
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="upgrade the database schema (alembic upgrade head)")
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION instead (e.g. base)")
    migrate.set_defaults(handler=_core("migrate"))
    user = sub.add_parser("user", help="users").add_subparsers(dest="action", required=True)
    add_user = user.add_parser("add", help="add a user")
    add_user.add_argument("email")
    add_user.add_argument("--name")
    add_user.add_argument("--admin", action="store_true", help="an operator")
    add_user.set_defaults(handler=_core("user_add"))
    _add_mailbox_commands(sub)
    refresh = sub.add_parser("refresh", help="run one refresh cycle now (the worker's code path)")
    refresh.add_argument("id", type=mailbox_id)
    _json_flag(refresh)
    refresh.set_defaults(handler=_core("refresh"))
    hist = sub.add_parser("history", help="a mailbox's state history")
    hist.add_argument("id", type=mailbox_id)
    _json_flag(hist)
    hist.set_defaults(handler=_core("history"))
    out = sub.add_parser("outbox", help="queued and sent emails")
    out.add_argument("--mailbox", type=mailbox_id)
    _json_flag(out)
    out.set_defaults(handler=_core("outbox"))
    out_actions = out.add_subparsers(dest="action")
    retry = out_actions.add_parser("retry", help="send failed emails again (e.g. after fixing the SMTP password)")
    retry.add_argument("--since", type=moment, help="only emails queued at or after this time (ISO 8601, UTC)")
    retry.set_defaults(handler=_core("outbox_retry"))
    sub.add_parser("rotate-keys", help="re-encrypt every token under the first key").set_defaults(
        handler=_core("rotate_keys")
    )
    sub.add_parser("generate-key", help="print a new encryption key").set_defaults(handler=_core("generate_key"))
    sub.add_parser(
        "check-config", help="print every setting and its source; exit 1 on anything unsafe for production"
    ).set_defaults(handler=_core("check_config"))
    for entry in entry_points(group="tokenwarden.commands"):
        try:
            register = entry.load()
        except ModuleNotFoundError as err:
            if (err.name or "").partition(".")[0] in OWN_PACKAGES:
                raise
            continue  # an optional extra is not installed (devkit's servers in production): no such commands
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging(log_level(os.environ, "WARNING"))
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args, os.environ)
        return int(asyncio.run(result) if asyncio.iscoroutine(result) else result or 0)
    except Exception as err:
        from statemachine.cli.failures import failure_message  # only on failure: it imports SQLAlchemy

        message = failure_message(err)
        if message is None:
            raise
    print(f"tokenwarden: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
