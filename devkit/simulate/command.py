"""`tokenwarden simulate`: the real pipeline against the sandbox provider, scripted faults, time compressed.

Why: the original plan promised figures (95 % automatic recovery, an email within minutes, no
mass disabling). This command produces them from a real `tokenwarden worker` on real PostgreSQL and
Redis, and replays the same recorded cycles under the naive policy the plan replaced, side by side.
Progress goes to stderr; the tables (or `--json`) to stdout. Everything started is stopped on exit,
Ctrl-C included.

The pieces: timing (compression), scenarios (plans), services (servers and
the worker subprocess), runner and driver (one scenario), records (database
reads), metrics (pure metrics and the naive replay), report (output).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from cryptography.fernet import Fernet

from devkit.embedded import ServiceStartError
from devkit.simulate.report import as_json, table
from devkit.simulate.runner import ScenarioResult, Services, run_scenario
from devkit.simulate.scenarios import SCENARIOS, parse_providers, plan
from devkit.simulate.services import SimulationError, postgres_admin, smtp_sink
from devkit.simulate.timing import Compression, CompressionError, describe, worker_environment
from devkit.worker_process import WorkerExitedError
from statemachine.services.settings import load_settings

EXIT_INTERRUPTED = 130


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
    run.set_defaults(handler=simulate)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _say_for(scenario: str, line: str) -> None:
    _say(f"[{scenario}] {line}")


@contextlib.contextmanager
def _log_dir(chosen: Path | None) -> Iterator[Path]:
    if chosen is not None:
        chosen.mkdir(parents=True, exist_ok=True)
        yield chosen
        return
    with tempfile.TemporaryDirectory(prefix="tw-simulate-") as folder:
        yield Path(folder)


async def _run(args: argparse.Namespace, env: Mapping[str, str], c: Compression) -> list[ScenarioResult]:
    results = []
    with _log_dir(args.log_dir) as logs:
        async with postgres_admin(env) as admin, smtp_sink() as smtp:
            services = Services(admin, smtp, Fernet.generate_key().decode(), logs, env)
            for name in SCENARIOS if args.scenario == "all" else (args.scenario,):
                scenario = plan(name, args.mailboxes, args.hours * 60, args.seed, args.providers)
                _say(f"== {name}: {scenario.mailboxes:,} mailboxes ({scenario.mix()}), {scenario.minutes:g} min: "
                     f"{scenario.describe()}")  # fmt: skip
                result = await run_scenario(scenario, c, services, functools.partial(_say_for, name))
                results.append(result)
                if not args.json:
                    print(table(result) + "\n", flush=True)
    return results


async def simulate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the chosen scenarios one after the other; exit 1 with one line when something could not run."""
    c = Compression(args.minute_seconds)
    try:
        base = load_settings(env)
        worker_environment(base, c)  # refuses a compression the worker's settings cannot express
        for line in describe(base, c):
            _say(line)
        results = await _run(args, env, c)
    except (SimulationError, CompressionError, ServiceStartError, WorkerExitedError) as err:
        print(f"tokenwarden: error: {err}".replace("\n", "\n  "), file=sys.stderr)
        return 1
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancelled us; every server is already stopped
        _say("interrupted: the worker and every server were stopped")
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps([as_json(r) for r in results], indent=2))
    return 0
