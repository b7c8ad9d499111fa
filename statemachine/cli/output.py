"""How the commands print rows: an aligned table for people, sorted indented JSON for scripts.

The worker's and the web app's commands (jobs/, web/) print through these too, so every table and
every `--json` output of `tokenwarden` looks the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, empty: str | None = None) -> None:
    """A header and one line per row, each column as wide as its widest cell, "-" for no value.

    With no rows, `empty` (when given) is printed instead of a lone header.
    """
    if not rows and empty is not None:
        print(empty)
        return
    cells = [[str(row.get(c) if row.get(c) is not None else "-") for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [list(columns), *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
