"""The parsers of `tokenwarden worker`, `incidents` and `webhooks ...`, added through the entry-point group.

Their code (jobs/commands.py) is imported only when one of them runs.
"""

from __future__ import annotations

import argparse

from statemachine.cli.lazy import Handler, lazy
from statemachine.cli.main import mailbox_id


def _jobs(name: str) -> Handler:
    return lazy(f"jobs.commands:{name}")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser("worker", help="run the worker: scheduled refreshes, email delivery, incident guard")
    worker.add_argument("--burst", action="store_true", help="one pass: refresh what is due, send the emails, exit")
    worker.set_defaults(handler=_jobs("run_worker"))
    incidents = sub.add_parser("incidents", help="provider incidents, newest first")
    incidents.add_argument("--limit", type=int, default=100)
    incidents.add_argument("--json", action="store_true", help="machine-readable output")
    incidents.set_defaults(handler=_jobs("show_incidents"))
    hooks = sub.add_parser("webhooks", help="webhook deliveries").add_subparsers(dest="action", required=True)
    deliveries = hooks.add_parser("deliveries", help="webhook deliveries, newest first (never the body)")
    deliveries.add_argument("--failed", action="store_true", help="only the ones given up on")
    deliveries.add_argument("--json", action="store_true", help="machine-readable output")
    deliveries.set_defaults(handler=_jobs("show_deliveries"))
    again = hooks.add_parser("redeliver", help="send a delivery again: the same webhook-id and body")
    again.add_argument("id", type=mailbox_id, help="the delivery's id (from `webhooks deliveries`)")
    again.set_defaults(handler=_jobs("redeliver"))
