"""The parsers of `tokenwarden worker` and `tokenwarden incidents`, added through the entry-point group.

Their code (jobs/commands.py) is imported only when one of them runs.
"""

from __future__ import annotations

import argparse

from statemachine.cli.lazy import lazy


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser("worker", help="run the worker: scheduled refreshes, email delivery, incident guard")
    worker.add_argument("--burst", action="store_true", help="one pass: refresh what is due, send the emails, exit")
    worker.set_defaults(handler=lazy("jobs.commands:run_worker"))
    incidents = sub.add_parser("incidents", help="provider incidents, newest first")
    incidents.add_argument("--limit", type=int, default=100)
    incidents.add_argument("--json", action="store_true", help="machine-readable output")
    incidents.set_defaults(handler=lazy("jobs.commands:show_incidents"))
