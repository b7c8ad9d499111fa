"""The parsers of `tokenwarden demo` and `tokenwarden sandbox ...`; their code is imported when they run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from devkit.demo.faults import MAILBOX_FAULTS, MAX_OUTAGE_MINUTES
from devkit.embedded import extra_installed
from statemachine.cli.lazy import Handler, lazy
from statemachine.cli.main import mailbox_id
from statemachine.providers import registry

DEFAULT_DATA_DIR = Path("demo-data")
DEFAULT_PORT = 8000


def _sandbox(name: str) -> Handler:
    return lazy(f"devkit.demo.sandbox_cli:{name}")


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is a whole number from 1 to 65535, not {text!r}")
    return int(text)


def register_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    if not extra_installed():
        return
    demo = sub.add_parser(
        "demo", help="run everything on this machine with demo data and demo timings, until Ctrl-C",
        description="Starts PostgreSQL and Redis (embedded, unless DATABASE_URL / REDIS_URL are set), the sandbox "
        "Google, a mail catcher, the web app and a worker, with a demo data set; prints the addresses and sign-in "
        "links. Ctrl-C stops everything; the next run reuses the data folder.",
    )  # fmt: skip
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"where the database, keys, mail and logs are kept (default ./{DEFAULT_DATA_DIR})",
    )
    demo.add_argument("--port", type=_port, default=DEFAULT_PORT,
                      help=f"the web app's port on 127.0.0.1 (default {DEFAULT_PORT})")  # fmt: skip
    demo.set_defaults(handler=lazy("devkit.demo.command:run_demo"))


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (`tokenwarden sandbox fault: error: ...`), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _whole(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return int(text)


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, not {text!r}") from None
    if not 0 < value <= MAX_OUTAGE_MINUTES:
        raise argparse.ArgumentTypeError(f"minutes must be above 0 and at most {MAX_OUTAGE_MINUTES}")
    return value


def register_sandbox(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    if not extra_installed():
        return
    sandbox = sub.add_parser("sandbox", help="break mailboxes at the running demo's sandbox providers (demo only)")
    sandbox.__class__ = OneLineParser  # made by the top-level parser's class; it reports errors in one line too
    actions_ = sandbox.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=OneLineParser)
    common = OneLineParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"the running demo's data folder (default ./{DEFAULT_DATA_DIR})")  # fmt: skip
    fault = actions_.add_parser("fault", parents=[common], help="make one mailbox's token requests fail")
    fault.add_argument("mailbox", metavar="MAILBOX_ID", type=mailbox_id)
    fault.add_argument("--mode", required=True, choices=list(MAILBOX_FAULTS),
                       help="; ".join(f"{mode}: {words}" for mode, (words, _) in MAILBOX_FAULTS.items()))  # fmt: skip
    fault.add_argument("--count", type=_whole, help="only the next N requests (default: until cleared)")
    fault.set_defaults(handler=_sandbox("_fault"))
    outage = actions_.add_parser("outage", parents=[common], help="every token request gets a 503 for N minutes")
    outage.add_argument("--minutes", type=_minutes, required=True)
    outage.set_defaults(handler=_sandbox("_outage"))
    misconfigure = actions_.add_parser(
        "misconfigure", parents=[common], help="reject our client secret (invalid_client) for every request"
    )
    misconfigure.set_defaults(handler=_sandbox("_misconfigure"))
    for parser in (outage, misconfigure):
        parser.add_argument("--provider", choices=registry.NAMES, default="google", help="whose (default google)")
    clear = actions_.add_parser("clear", parents=[common], help="clear one mailbox's fault, or all faults")
    clear.add_argument("mailbox", metavar="MAILBOX_ID", type=mailbox_id, nargs="?")
    clear.set_defaults(handler=_sandbox("_clear"))
    actions_.add_parser(
        "requests", parents=[common], help="token requests per mailbox so far, and the faults in place"
    ).set_defaults(handler=_sandbox("_requests"))
