"""Benchmark: wall time of `tokenwarden --help` beside a bare `python -c pass` (the interpreter's own start-up).

Run: `.venv/bin/python -m tests.benchmarks.cli_start`. Best of five runs of each, so a busy box
shows less noise.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.benchmarks.figures import Figure, print_figures

TOKENWARDEN = Path(sys.executable).with_name("tokenwarden")
RUNS = 5


def best_of(command: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return min(times)


def figures() -> list[Figure]:
    help_time = best_of([str(TOKENWARDEN), "--help"])
    bare = best_of([sys.executable, "-c", "pass"])
    return [Figure("tokenwarden --help", help_time * 1000, "ms", "python -c pass", bare * 1000,
                   "python -m tests.benchmarks.cli_start", "<= 300 ms")]  # fmt: skip


if __name__ == "__main__":
    print_figures(figures())
