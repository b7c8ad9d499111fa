"""What `tokenwarden worker` and `tokenwarden incidents` run (their parsers: jobs/cli.py)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

import uvloop

from jobs.serve import serve
from statemachine.cli.output import print_json, print_table
from statemachine.services.config_check import warn_about
from statemachine.services.logs import configure_logging, log_level
from statemachine.services.settings import load_settings, read_settings
from statemachine.store.db import open_sessionmaker
from statemachine.store.incidents import list_incidents

Env = Mapping[str, str]
INCIDENT_COLUMNS = ("id", "provider", "status", "opened_at", "closed_at", "cause")


def run_worker(args: argparse.Namespace, env: Env) -> int:
    """The worker on uvloop: the event loop's own work (sockets, callbacks) is most of a refresh's CPU."""
    return uvloop.run(_worker(args, env))


async def _worker(args: argparse.Namespace, env: Env) -> int:
    settings, readings = read_settings(env)
    settings.require("database_url", "encryption_keys")
    configure_logging(log_level(env, "INFO"))
    await warn_about(settings, readings, "worker")  # never refuses to start: the demo and the tests run like this
    return await serve(settings, burst=args.burst)


async def show_incidents(args: argparse.Namespace, env: Env) -> int:
    settings = load_settings(env)
    settings.require("database_url")
    assert settings.database_url is not None
    async with open_sessionmaker(settings.database_url) as sessionmaker, sessionmaker() as session:
        rows = await list_incidents(session, args.limit)
    if args.json:
        print_json(rows)
    else:
        print_table(rows, INCIDENT_COLUMNS, empty="no incidents")
    return 0
