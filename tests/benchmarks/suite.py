"""`make bench`: every figure of issue 12 beside its baseline, measured in one run, with the command for each.

Run: `.venv/bin/python -m tests.benchmarks.suite [--mailboxes 1000000] [--count 3000]`. The box's
load average is printed before and after: figures from a busy box are noisy, the ratios less so.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os

from tests.benchmarks import cli_start, cycle_parts, scale, worker_throughput
from tests.benchmarks.figures import print_figures


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg()) + f" on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=1_000_000, help="generated rows for the scale figures")
    parser.add_argument("--count", type=int, default=3000, help="mailboxes the workers refresh")
    args = parser.parse_args()
    print(f"before: {load()}", flush=True)
    figures = cli_start.figures() + scale.figures(args.mailboxes) + worker_throughput.figures(args.count)
    figures += cycle_parts.figures(args.count)
    print(f"after: {load()}")
    print_figures(figures)


if __name__ == "__main__":
    main()
