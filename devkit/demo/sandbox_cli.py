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

from devkit.demo import actions
from devkit.demo.config import demo_environment
from devkit.demo.control import FaultView, SandboxControl, mailbox_ids_by_token
from devkit.demo.datadir import DataDir, DemoError
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import load_settings

Action = Callable[[Runtime, SandboxControl], Awaitable[str]]
ACTOR = "demo:sandbox-cli"


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
