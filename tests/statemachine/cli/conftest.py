"""The CLI tests' fixtures: the service environment (real PostgreSQL, the served sandbox) and `cli(...)`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devkit.serving import RunningServer
from statemachine.cli.main import main
from tests.database import service_environment

ACCOUNT = {"email": "ana@gmail.test", "sub": "104400000000000000001"}


@pytest.fixture
def control(sandbox: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=5) as client:
        client.post("/_sandbox/reset").raise_for_status()
        client.post("/_sandbox/accounts", json=ACCOUNT).raise_for_status()
        yield client


@pytest.fixture
def cli_env(database_url: str, sandbox: RunningServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = service_environment(database_url, GOOGLE_TOKEN_URL=f"{sandbox.url}/token")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str, code: int = 0) -> str:
        status = main(list(args))
        out, err = self.capsys.readouterr()
        assert status == code, (out, err)
        return out if code == 0 else err

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json"))


@pytest.fixture
def cli(cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Cli:
    cli = Cli(capsys)
    cli("user", "add", "owner@example.test", "--name", "Ana")
    return cli
