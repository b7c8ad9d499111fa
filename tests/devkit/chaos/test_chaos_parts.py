"""The chaos suite's parts that can be checked quickly: Redis restarts on its socket, the proxy resets, the schedule."""

from __future__ import annotations

import httpx
import pytest
import redis

from devkit.chaos import schedule
from devkit.chaos.proxy import ResettingProxy
from devkit.embedded import embedded_redis
from devkit.sandbox import create_sandbox_app
from devkit.serving import serve_in_thread


def test_a_restarted_redis_is_empty_and_on_the_same_url() -> None:
    with embedded_redis() as server:
        client = redis.Redis.from_url(server.url)
        client.set("job", "1")
        server.restart()
        assert client.get("job") is None  # a new connection, the same socket, nothing kept
        client.close()


async def test_the_proxy_forwards_then_resets_without_reaching_the_provider() -> None:
    with serve_in_thread(create_sandbox_app(client_id="c", client_secret="s")) as sandbox:
        proxy = ResettingProxy(int(sandbox.url.rsplit(":", 1)[1]))
        url = proxy.start()
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                assert (await client.get("/_sandbox/requests")).json()["total"] == 0
                proxy.resetting = True
                with pytest.raises(httpx.TransportError):
                    await client.post("/token", data={"grant_type": "refresh_token"})
                proxy.resetting = False
                assert (await client.get("/_sandbox/requests")).json()["total"] == 0  # the token request never arrived
        finally:
            proxy.stop()
    assert proxy.resets == 1


async def test_the_proxy_answers_while_the_harness_loop_is_busy() -> None:
    """The harness's checks hold its loop; the token path must not wait for them (a late answer is resent)."""
    with serve_in_thread(create_sandbox_app(client_id="c", client_secret="s")) as sandbox:
        proxy = ResettingProxy(int(sandbox.url.rsplit(":", 1)[1]))
        url = proxy.start()
        try:  # a blocking call: this test's loop, the one that started the proxy, runs nothing meanwhile
            answer = httpx.get(f"{url}/_sandbox/requests", timeout=2)  # noqa: ASYNC210
        finally:
            proxy.stop()
    assert answer.status_code == 200


def test_the_schedule_is_in_order_and_ends_before_the_checks() -> None:
    times = [fault.at for fault in schedule.SCHEDULE]
    assert times == sorted(times)
    assert all(fault.at + fault.seconds <= schedule.FAULTS_END for fault in schedule.SCHEDULE)
    assert {f.name for f in schedule.SCHEDULE} >= {
        schedule.KILL,
        "Redis FLUSHALL",
        "Redis restart",
        "PostgreSQL restart",
    }
