"""What `tokenwarden worker`, `incidents` and `webhooks deliveries|redeliver` run (their parsers: jobs/cli.py)."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import uvloop

from jobs.serve import serve
from statemachine.cli.commands import database_session
from statemachine.cli.output import print_json, print_table
from statemachine.services.config_check import warn_about
from statemachine.services.logs import configure_logging, log_level
from statemachine.services.settings import read_settings
from statemachine.store import webhooks
from statemachine.store.incidents import list_incidents

Env = Mapping[str, str]
INCIDENT_COLUMNS = ("id", "provider", "status", "opened_at", "closed_at", "cause")
DELIVERY_COLUMNS = ("id", "endpoint_id", "type", "mailbox_id", "sequence", "status", "attempts", "last_error")
# The youngest generation is collected every 7,000 allocations rather than Python's 700: at the default, the
# garbage collector took 6-10 % of a refresh cycle's CPU, at 7,000 3-4 % (python -m tests.benchmarks.cycle_parts).
# A larger value (20,000) bought nothing more; freezing the startup objects bought little beside it.
WORKER_GC_THRESHOLD = 7000


def run_worker(args: argparse.Namespace, env: Env) -> int:
    """The worker on uvloop: the event loop's own work (sockets, callbacks) is most of a refresh's CPU."""
    gc.set_threshold(WORKER_GC_THRESHOLD, *gc.get_threshold()[1:])
    return uvloop.run(_worker(args, env))


async def _worker(args: argparse.Namespace, env: Env) -> int:
    settings, readings = read_settings(env)
    settings.require("database_url", "encryption_keys")
    configure_logging(log_level(env, "INFO"))
    await warn_about(settings, readings, "worker")  # never refuses to start: the demo and the tests run like this
    return await serve(settings, burst=args.burst)


async def show_deliveries(args: argparse.Namespace, env: Env) -> int:
    async with database_session(env) as session:
        rows = await webhooks.list_deliveries(session, failed=args.failed)
    if args.json:
        print_json(rows)
    else:
        print_table(rows, DELIVERY_COLUMNS, empty="no webhook deliveries")
    return 0


async def redeliver(args: argparse.Namespace, env: Env) -> int:
    async with database_session(env) as session, session.begin():
        found = await webhooks.redeliver(session, args.id, datetime.now(UTC))
    if not found:
        print(f"tokenwarden: error: no webhook delivery {args.id}", file=sys.stderr)
        return 1
    print(f"webhook delivery {args.id} queued again; the worker sends it within seconds")
    return 0


async def show_incidents(args: argparse.Namespace, env: Env) -> int:
    async with database_session(env) as session:
        rows = await list_incidents(session, args.limit)
    if args.json:
        print_json(rows)
    else:
        print_table(rows, INCIDENT_COLUMNS, empty="no incidents")
    return 0
