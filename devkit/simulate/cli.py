"""The parser of `tokenwarden simulate`; the simulator is imported when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from devkit.embedded import extra_installed
from devkit.simulate.scenarios import SCENARIOS, parse_providers
from statemachine.cli.lazy import lazy


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


def _providers(text: str) -> tuple[tuple[str, float], ...]:
    try:
        return parse_providers(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    if not extra_installed():
        return
    run = sub.add_parser(
        "simulate",
        help="run the real worker against the sandbox provider with scripted faults; print the plan's metrics",
        description="Each scenario gets a fresh database and Redis (embedded unless DATABASE_URL/REDIS_URL are "
        "set; REDIS_URL's database is emptied). TOKENWARDEN_* delays in the environment count as simulated time.",
    )
    run.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all", help="one scenario (default: all)")
    run.add_argument("--mailboxes", type=_positive_int, default=1000, help="mailboxes per scenario (default 1000)")
    run.add_argument("--hours", type=_positive_float, default=2.0, help="simulated hours per scenario (default 2)")
    run.add_argument("--minute-seconds", type=_positive_float, default=1.0,
                     help="real seconds per simulated minute (default 1.0: 60x faster than real time)")  # fmt: skip
    run.add_argument("--seed", type=int, default=1, help="seed of the fault plans (default 1)")
    run.add_argument("--providers", type=_providers, default=(("google", 1.0),), metavar="MIX",
                     help="the mailboxes' providers and shares, e.g. google=0.6,microsoft=0.4 (default google=1); "
                     "an outage then hits Microsoft only")  # fmt: skip
    run.add_argument("--log-dir", type=Path, help="keep the worker's logs here (default: a temporary folder)")
    run.add_argument("--json", action="store_true", help="print a JSON list of scenario results instead of tables")
    run.set_defaults(handler=lazy("devkit.simulate.command:simulate"))
