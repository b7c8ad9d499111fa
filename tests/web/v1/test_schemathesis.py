"""Schemathesis: property-based requests generated from GET /v1/openapi.json against `tokenwarden serve` and
the real database; every answer must be documented, match its schema, and never be a server error."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from devkit.serving import RunningServer
from tests.web.support import start_serving, stop_serving

EXAMPLES = 30
# Not checked: "every schema-valid request is accepted". Some rules cannot be written in JSON Schema (a
# return_url under TOKENWARDEN_ALLOWED_RETURN_URLS, no private webhook target); they answer a documented 422.


@pytest.fixture
def served(web_env: dict[str, str], sandbox: RunningServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The app in its own process with a key and two mailboxes; yields (URL, key)."""
    env = {**web_env, "GOOGLE_TOKEN_URL": f"{sandbox.url}/token", "GOOGLE_REVOKE_URL": f"{sandbox.url}/revoke",
           "TOKENWARDEN_ALLOWED_RETURN_URLS": "https://app.example.test/"}  # fmt: skip
    url, process = start_serving(env, tmp_path / "serve.log")
    try:
        yield url, _seed(env, sandbox)
    finally:
        stop_serving(process)


def _seed(env: dict[str, str], sandbox: RunningServer) -> str:
    """Two mailboxes whose grants the sandbox honours: a token request for either is answered as documented
    (a grant it did not know failed with invalid_grant, which leaves a healthy mailbox retrying, and the
    route's 503 "try again later" is a deliberate answer that schemathesis still counts as a server error)."""

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "statemachine.cli.main", *args], env=env, capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout.strip().splitlines()[0]

    cli("user", "add", "owner@example.test")
    for address in ("ana@gmail.test", "bob@gmail.test"):
        refresh_token = f"1//refresh-{address}"
        httpx.post(f"{sandbox.url}/_sandbox/accounts", json={"email": address}, timeout=5).raise_for_status()
        grant = {"email": address, "refresh_token": refresh_token}
        httpx.post(f"{sandbox.url}/_sandbox/tokens", json=grant, timeout=5).raise_for_status()
        cli("mailbox", "add", "--user", "owner@example.test", "--provider", "google", "--address", address,
            "--refresh-token", refresh_token)  # fmt: skip
    return cli("api-key", "create", "schemathesis")


def test_every_route_answers_as_documented(served: tuple[str, str]) -> None:
    """Each operation in turn (schemathesis' pytest plugin does not load under this pytest: its Python API does)."""
    url, key = served
    schema = schemathesis.openapi.from_url(f"{url}/v1/openapi.json")

    @schema.auth()
    class ApiKey:
        """The key as a host app sends it (so schemathesis' own checks can also leave it out or spoil it)."""

        def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
            return key

        def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers_as_documented(case: schemathesis.Case) -> None:
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        answers_as_documented()
