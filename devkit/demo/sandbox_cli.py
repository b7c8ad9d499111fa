"""`tokenwarden sandbox ...`: the sandbox panel's controls from a second terminal, for the running demo.

Why: some people (and the smoke test) prefer a command to a web form. The command finds the running
demo through its data folder (`run.json`: the sandbox's address and the embedded database's; the
keys from `secrets.json`), maps a mailbox id to its refresh token by decrypting it with the demo's
key, and calls the sandbox's fault API, the same code as the panel (web/demo/actions.py). The token
is never printed. Every error, a bad argument included, is one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import NoReturn

from devkit.demo import actions
from devkit.demo.config import demo_environment
from devkit.demo.control import MAILBOX_FAULTS, FaultView, SandboxControl, mailbox_ids_by_token
from devkit.demo.datadir import DEFAULT_DATA_DIR, DataDir, DemoError
from statemachine.cli.main import mailbox_id
from statemachine.providers import registry
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings

Action = Callable[[Runtime, SandboxControl], Awaitable[str]]
ACTOR = "demo:sandbox-cli"


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
    if not 0 < value <= actions.MAX_OUTAGE_MINUTES:
        raise argparse.ArgumentTypeError(f"minutes must be above 0 and at most {actions.MAX_OUTAGE_MINUTES}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    fault.set_defaults(handler=_fault)
    outage = actions_.add_parser("outage", parents=[common], help="every token request gets a 503 for N minutes")
    outage.add_argument("--minutes", type=_minutes, required=True)
    outage.set_defaults(handler=_outage)
    misconfigure = actions_.add_parser(
        "misconfigure", parents=[common], help="reject our client secret (invalid_client) for every request"
    )
    misconfigure.set_defaults(handler=_misconfigure)
    for parser in (outage, misconfigure):
        parser.add_argument("--provider", choices=registry.NAMES, default="google", help="whose (default google)")
    clear = actions_.add_parser("clear", parents=[common], help="clear one mailbox's fault, or all faults")
    clear.add_argument("mailbox", metavar="MAILBOX_ID", type=mailbox_id, nargs="?")
    clear.set_defaults(handler=_clear)
    actions_.add_parser(
        "requests", parents=[common], help="token requests per mailbox so far, and the faults in place"
    ).set_defaults(handler=_requests)


async def _run(args: argparse.Namespace, env: Mapping[str, str], action: Action) -> int:
    """Open the demo's database with its key, run `action`, print its sentence; DemoError is one line."""
    try:
        data = DataDir(args.data_dir.resolve())
        secrets, info = data.existing_secrets(), data.run_info()
        database = info.database_url or env.get("DATABASE_URL")
        if not database:
            raise DemoError("the demo runs on an external database: set DATABASE_URL here too")
        urls = {"DATABASE_URL": database}
        settings = load_settings(demo_environment(secrets.environment(), urls, info.sandbox_url, info.web_url))
        async with open_runtime(settings) as runtime:
            print(await action(runtime, SandboxControl(runtime.http, info.sandbox_url)))
    except DemoError as err:
        print(f"tokenwarden: error: {err}", file=sys.stderr)
        return 1
    return 0


async def _fault(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    async def action(runtime: Runtime, control: SandboxControl) -> str:
        return await actions.break_mailbox(runtime, control, args.mailbox, args.mode, args.count, ACTOR)

    return await _run(args, env, action)


async def _outage(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return await _run(args, env, lambda runtime, control: actions.outage(control.of(args.provider), args.minutes))


async def _misconfigure(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return await _run(args, env, lambda runtime, control: actions.misconfigure(control.of(args.provider)))


async def _clear(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return await _run(args, env, lambda runtime, control: actions.clear(runtime, control, args.mailbox))


async def _requests(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return await _run(args, env, requests_report)


async def requests_report(runtime: Runtime, control: SandboxControl) -> str:
    """Requests by grant type, the provider-wide fault, then one line per mailbox that was asked for or broken."""
    ids = await mailbox_ids_by_token(runtime.sessionmaker, runtime.cipher)
    by_grant, by_mailbox = await control.requests(ids)
    provider, faults = await control.faults(ids)
    grants = ", ".join(f"{grant} {count}" for grant, count in sorted(by_grant.items())) or "none"
    lines = [f"token requests so far: {grants}"]
    if provider is not None:
        left = f", {provider.remaining_seconds:.0f} s left" if provider.remaining_seconds is not None else ""
        lines.append(f"provider-wide fault: {provider.words}{left}")
    lines.append(f"{'mailbox':>7}  {'requests':>8}  fault")
    for mailbox in sorted({*(k for k in by_mailbox if k is not None), *faults}):
        lines.append(f"{mailbox:>7}  {by_mailbox.get(mailbox, 0):>8}  {_fault_words(faults.get(mailbox))}")
    if by_mailbox.get(None):
        lines.append(f"{'other':>7}  {by_mailbox[None]:>8}  (tokens no mailbox holds any more)")
    return "\n".join(lines)


def _fault_words(fault: FaultView | None) -> str:
    if fault is None:
        return "-"
    return fault.words + (f" (x{fault.count} left)" if fault.count is not None else "")
