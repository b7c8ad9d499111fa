"""One printed row per figure of `make bench`: ours beside a baseline measured in the same run, and how to rerun it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """`value` and `baseline` in `unit`; `goal` is the issue's target in words (empty when there is none)."""

    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    command: str
    goal: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")


def print_figures(figures: list[Figure]) -> None:
    print(f"{'figure':44} {'ours':>12} {'baseline':>12} {'ratio':>8}  {'goal':12} baseline / command")
    for f in figures:
        print(
            f"{f.name:44} {f.value:>9,.2f} {f.unit:<2} {f.baseline:>9,.2f} {f.unit:<2} {f.ratio:>7.2f}x  {f.goal:12}"
            f" {f.baseline_name}\n{'':44} $ {f.command}"
        )
