"""`tokenwarden demo` (what `make demo` runs): the whole service on this machine, until Ctrl-C.

Why one command: a newcomer should see Tokenwarden work in five minutes with nothing installed but
Python. It starts, with a progress line each: embedded PostgreSQL and Redis in the data folder
(unless DATABASE_URL / REDIS_URL are set), the migrations, the sandbox Google, an SMTP catcher, the
demo data set, the web app (in this process, with the demo-only pages) and one worker (a
subprocess). Then it prints the addresses and two sign-in links, and runs until Ctrl-C or SIGTERM,
when everything is stopped in reverse order. Keys and data stay in the folder for the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devkit.demo import pages as demo_pages
from devkit.demo.config import ACCESS_TOKEN_SECONDS, DemoConfig, demo_environment, timings_lines
from devkit.demo.control import SandboxControl
from devkit.demo.datadir import DataDir, DemoError, RunInfo
from devkit.demo.host import HostApp, running as host_running
from devkit.demo.mailcatcher import mail_catcher
from devkit.demo.seed import prepare
from devkit.demo.services import Progress, running_worker, served, worker_environment
from devkit.demo.stories import OPERATOR, USER
from devkit.embedded import ServiceStartError, start_embedded_postgres, start_embedded_redis
from devkit.sandbox import create_sandboxes
from devkit.worker_process import WorkerExitedError, WorkerProcess
from statemachine.services.logs import JsonFormatter
from statemachine.services.runtime import Runtime, open_runtime
from statemachine.services.settings import SettingsError, database_url, load_settings
from statemachine.store.migrations import migrate
from web.app import create_app
from web.auth import create_login_link
from web.signing import Signing

LINK_MINUTES = 24 * 60
WATCH_SECONDS = 1.0


@dataclass(frozen=True)
class Servers:
    urls: dict[str, str]  # DATABASE_URL, REDIS_URL, SMTP_URL
    embedded_database: bool
    sandbox_url: str


class _Stopper:
    """The first SIGINT/SIGTERM/SIGHUP cancels the demo (the exit stack then stops everything); later ones say so."""

    def __init__(self, task: asyncio.Task[object], progress: Progress) -> None:
        self.task, self.progress, self.stopping = task, progress, False

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: its terminal was closed
            loop.add_signal_handler(sig, self.signalled)

    def signalled(self) -> None:
        if self.stopping:
            self.progress.say("still stopping, please wait (a worker lets running cycles finish)...")
            return
        self.stopping = True
        self.progress.say("\nstopping everything...")
        self.task.cancel()


async def run_demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Start, announce, run until a signal (0) or until the worker dies (1)."""
    progress = Progress()
    task = asyncio.current_task()
    assert task is not None
    _Stopper(task, progress).install()
    data = DataDir(args.data_dir.resolve())
    try:
        async with contextlib.AsyncExitStack() as stack:
            worker = await _start(stack, data, args.port, env, progress)
            while True:
                await asyncio.sleep(WATCH_SECONDS)
                try:
                    worker.check()
                except WorkerExitedError as err:
                    raise DemoError(str(err)) from None
    except asyncio.CancelledError:
        progress.say("stopped: the worker, the web app, the mail catcher, the sandbox providers, Redis and PostgreSQL")
        return 0
    except (DemoError, ServiceStartError, SettingsError) as err:
        print(f"tokenwarden: error: {err}".replace("\n", "\n  "), file=sys.stderr, flush=True)
        return 1


def _log_to_file(path: Path) -> None:
    """Everything the demo's web app and sandbox log goes to a file; the terminal keeps errors and progress."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in root.handlers:
        if getattr(handler, "_tokenwarden_json", False):
            handler.setLevel(logging.ERROR)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)


async def _start(
    stack: contextlib.AsyncExitStack, data: DataDir, port: int, env: Mapping[str, str], progress: Progress
) -> WorkerProcess:
    """Start every server, in dependency order, registering each one's stop on the stack."""
    data.create()
    secrets = data.secrets()
    _log_to_file(data.logs / "demo.log")
    progress.say(f"tokenwarden demo: data folder {data.root} (delete it to start over)")
    servers = await _servers(stack, data, env, progress, secrets.client_id, secrets.client_secret)
    base_url = f"http://127.0.0.1:{port}"
    settings_env = demo_environment(secrets.environment(), servers.urls, servers.sandbox_url, base_url)
    settings = load_settings(settings_env)
    runtime = await stack.enter_async_context(open_runtime(settings))
    await _demo_data(runtime, servers.sandbox_url, progress)
    with progress.step("starting the web app") as note:
        host = HostApp(base_url, servers.sandbox_url)
        extension = demo_pages.extension(DemoConfig(data.maildir, servers.sandbox_url), host)
        web = stack.enter_context(served(create_app(settings, extension=extension), "the web app", port))
        stack.callback(progress.say, "  stopping the web app")
        note(web.url)
    with progress.step("starting the demo host app (/dev/host)"):
        await stack.enter_async_context(host_running(host, runtime.sessionmaker))
    with progress.step("starting the worker") as note:
        log = data.logs / "worker.log"
        grace = settings.shutdown_grace_seconds
        worker = stack.enter_context(running_worker(worker_environment(settings_env), log, grace))
        stack.callback(progress.say, "  stopping the worker")
        note(f"log {log}")
    embedded_url = servers.urls["DATABASE_URL"] if servers.embedded_database else None
    stack.enter_context(data.running(RunInfo(os.getpid(), web.url, servers.sandbox_url, embedded_url)))
    await _announce(runtime, web.url, servers.sandbox_url, data, progress)
    return worker


async def _demo_data(runtime: Runtime, sandbox_url: str, progress: Progress) -> None:
    with progress.step("preparing the demo data") as note:
        report = await prepare(runtime, SandboxControl(runtime.http, sandbox_url))
        verb = "created through real refresh cycles" if report.created else "reused"
        note(f"{report.users} users and {report.mailboxes} mailboxes {verb}")
    if report.skipped:
        progress.say(f"  note: {report.skipped} mailboxes have tokens from another key; the sandbox does not know them")


async def _servers(
    stack: contextlib.AsyncExitStack, data: DataDir, env: Mapping[str, str], progress: Progress, client_id: str,
    client_secret: str,
) -> Servers:  # fmt: skip
    """PostgreSQL (migrated), Redis, the sandbox providers and the mail catcher."""
    if env.get("DATABASE_URL"):
        db_url = database_url(env["DATABASE_URL"])
        progress.say("  using DATABASE_URL for PostgreSQL")
    else:
        with progress.step(f"starting PostgreSQL (embedded, in {data.root / 'pgdata'})"):
            db_url = stack.enter_context(start_embedded_postgres(data.root))
        stack.callback(progress.say, "  stopping PostgreSQL")
    if env.get("REDIS_URL"):
        redis_url = env["REDIS_URL"]
        progress.say("  using REDIS_URL for Redis")
    else:
        with progress.step("starting Redis (embedded)"):
            redis_url = stack.enter_context(start_embedded_redis(data.root))
        stack.callback(progress.say, "  stopping Redis")
    with progress.step("migrating the database"):
        await migrate(db_url)
    with progress.step("starting the sandbox Google and Microsoft") as note:
        app = create_sandboxes(client_id=client_id, client_secret=client_secret,
                               access_token_lifetime=ACCESS_TOKEN_SECONDS)  # fmt: skip
        sandbox = stack.enter_context(served(app, "the sandbox providers"))
        stack.callback(progress.say, "  stopping the sandbox providers")
        note(sandbox.url)
    with progress.step("starting the mail catcher (SMTP)") as note:
        smtp_url = await stack.enter_async_context(mail_catcher(data.maildir))
        stack.callback(progress.say, "  stopping the mail catcher")
        note(smtp_url)
    urls = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "SMTP_URL": smtp_url}
    return Servers(urls, not env.get("DATABASE_URL"), sandbox.url)


async def _announce(runtime: Runtime, web_url: str, sandbox_url: str, data: DataDir, progress: Progress) -> None:
    """The addresses, the timings and one sign-in link each for the operator and a user."""
    settings = runtime.settings
    assert settings.secret_key is not None
    signing = Signing(settings.secret_key.reveal())
    links = [
        (role, email, await create_login_link(runtime.sessionmaker, signing, web_url, email, LINK_MINUTES))
        for role, email in (("operator", OPERATOR), ("user", USER))
    ]
    progress.say()
    for line in timings_lines():
        progress.say(line)
    progress.say()
    progress.say("Tokenwarden demo is running. Ctrl-C stops everything.")
    for name, path in (("dashboard", "/"), ("operations", "/ops"), ("mail", "/dev/mail"),
                       ("sandbox panel", "/dev/sandbox"), ("host app", "/dev/host")):  # fmt: skip
        progress.say(f"  {name:<14} {web_url}{path}")
    progress.say(f"  {'sandbox':<14} {sandbox_url}/authorize and {sandbox_url}/microsoft/common/oauth2/v2.0/authorize "
                 "(the consent pages; `tokenwarden sandbox --help`)")  # fmt: skip
    progress.say("Sign in (each link works once, for 24 h; restart the demo for new ones):")
    for role, email, link in links:
        progress.say(f"  {role:<8} {email:<18} {link}")
    progress.say(f"Logs: {data.logs}")
