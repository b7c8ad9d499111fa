"""The sandbox's timing controls that `tokenwarden simulate` relies on to compress time.

Why: a simulated hour must fit in a real minute, so issued access tokens, Retry-After and a fault's
duration have to be as short (and as fractional) as the compression asks, over the real HTTP API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from devkit.sandbox import create_sandbox_app
from devkit.serving import serve_in_thread

CLIENT_ID, CLIENT_SECRET = "sim-client.apps.googleusercontent.com", "GOCSPX-sim-secret"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    app = create_sandbox_app(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, access_token_lifetime=60)
    with serve_in_thread(app) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        client.post("/_sandbox/accounts", json={"email": "sim@example.test", "sub": "1"}).raise_for_status()
        client.post("/_sandbox/tokens", json={"sub": "1", "refresh_token": "rt-1"}).raise_for_status()
        yield client


def refresh(http: httpx.Client) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": CLIENT_ID}
    return http.post("/token", data=form | {"client_secret": CLIENT_SECRET})


def test_access_token_lifetime_is_configurable(http: httpx.Client) -> None:
    assert refresh(http).json()["expires_in"] == 60


def test_retry_after_may_be_a_fraction(http: httpx.Client) -> None:
    fault = {"mode": "rate_limit", "refresh_token": "rt-1", "retry_after": 0.5, "count": 1}
    assert http.post("/_sandbox/faults", json=fault).status_code == 201
    response = refresh(http)
    assert (response.status_code, response.headers["retry-after"]) == (429, "0.5")


def test_a_lasting_fault_starts_at_its_first_hit_and_then_ends_by_itself(http: httpx.Client) -> None:
    fault = {"mode": "http_5xx", "refresh_token": "rt-1", "lasts_seconds": 0.3}
    assert http.post("/_sandbox/faults", json=fault).status_code == 201
    time.sleep(0.4)  # not hit yet: the clock has not started
    assert refresh(http).status_code == 502
    assert refresh(http).status_code == 502
    time.sleep(0.4)
    assert refresh(http).status_code == 200
    assert http.get("/_sandbox/faults").json()["tokens"] == {}


def test_negative_lasts_seconds_is_refused(http: httpx.Client) -> None:
    response = http.post("/_sandbox/faults", json={"mode": "http_5xx", "lasts_seconds": -1})
    assert response.status_code == 400
