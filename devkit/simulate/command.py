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
from devkit.simulate.scenarios import SCENARIOS, plan
from devkit.simulate.services import SimulationError, postgres_admin, smtp_sink
from devkit.simulate.timing import Compression, CompressionError, describe, worker_environment
from devkit.worker_process import WorkerExitedError
from statemachine.services.settings import load_settings

EXIT_INTERRUPTED = 130


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
