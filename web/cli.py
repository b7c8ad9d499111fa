"""The parsers of `tokenwarden serve` and `tokenwarden login-link`, added through the entry-point group.

Their code (web/commands.py: the web app, uvicorn) is imported only when one of them runs.
"""

from __future__ import annotations

import argparse

from statemachine.cli.lazy import lazy

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
