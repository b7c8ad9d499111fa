"""The parsers of `tokenwarden serve`, `login-link`, `api-key` and `audit`, added through the entry-point group.

Their code (web/commands.py, web/v1/commands.py: the web app, uvicorn) is imported only when one of them runs.
"""

from __future__ import annotations

import argparse

from statemachine.cli.lazy import lazy
from statemachine.cli.main import mailbox_id

DEFAULT_LINK_MINUTES = 15
MAX_LINK_MINUTES = 7 * 24 * 60


def _minutes(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_LINK_MINUTES:
        raise argparse.ArgumentTypeError(f"minutes must be a whole number from 1 to {MAX_LINK_MINUTES}")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("serve", help="run the web app (dashboard, reconnect, operator pages, /healthz, /metrics)")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    run.set_defaults(handler=lazy("web.commands:serve"))
    link = sub.add_parser("login-link", help="print a single-use sign-in link for a user")
    link.add_argument("email", help="the user's email (the user must exist: `tokenwarden user add`)")
    link.add_argument("--minutes", type=_minutes, default=DEFAULT_LINK_MINUTES,
                      help=f"how long the link works (default {DEFAULT_LINK_MINUTES})")  # fmt: skip
    link.set_defaults(handler=lazy("web.commands:login_link"))
    _register_v1(sub)


def _register_v1(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("api-key", help="API keys of host apps (/v1)").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key and print it (shown only once)")
    create.add_argument("name", help="who uses it, e.g. the host app's name (unique)")
    create.set_defaults(handler=lazy("web.v1.commands:api_key_create"))
    listing = keys.add_parser("list", help="every key: name, prefix, created, last used, revoked")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=lazy("web.v1.commands:api_key_list"))
    revoke = keys.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("name")
    revoke.set_defaults(handler=lazy("web.v1.commands:api_key_revoke"))
    trail = sub.add_parser("audit", help="access tokens handed out through /v1 (newest first; never the token)")
    trail.add_argument("--mailbox", type=mailbox_id)
    trail.add_argument("--key", help="only this key's")
    trail.add_argument("--json", action="store_true", help="machine-readable output")
    trail.set_defaults(handler=lazy("web.v1.commands:audit"))
