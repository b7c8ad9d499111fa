"""The domain's pure modules import no I/O framework, and statemachine/ never imports jobs/ or web/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ["statemachine.states", "statemachine.errors", "statemachine.policy", "statemachine.machine",
        "statemachine.classify", "statemachine.emails", "statemachine.incident_rules"]  # fmt: skip
IO_PACKAGES = ("sqlalchemy", "httpx", "arq", "starlette", "asyncpg", "aiohttp", "redis")


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_package(module: str) -> None:
    probe = f"import sys, {module}; print(','.join(sorted(p for p in {IO_PACKAGES!r} if p in sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""


@pytest.mark.parametrize(
    ("package", "forbidden"), [("statemachine", ("jobs", "web")), ("jobs", ("web",)), ("web", ("jobs",))]
)
def test_package_boundaries(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert offenders == []
