"""`tokenwarden --help` and argument errors load the parsers only: no command's code, no I/O library.

Run in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "asyncpg", "httpx", "aiohttp", "arq", "redis", "starlette", "uvicorn", "jinja2", "alembic",
         "cryptography", "transitions", "jobs.commands", "web.commands", "devkit.demo.command",
         "devkit.simulate.command", "statemachine.cli.commands")  # fmt: skip
PROBE = """
import sys
from statemachine.cli.main import build_parser
build_parser()
print(" ".join(sorted(name for name in sys.modules if name.startswith({heavy!r}))))
"""


@pytest.mark.slow
def test_building_the_parser_imports_no_command_code() -> None:
    probe = PROBE.format(heavy=HEAVY)
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert loaded.split() == []
