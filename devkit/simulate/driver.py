"""Replays one scenario's plan against the sandbox while the real worker runs: faults on time, progress lines.

Why a timeline of actions: the worker runs on the real clock, so each planned fault is applied at its
compressed real time through the sandbox's HTTP control API, exactly as a test would. What was really
applied (which mailbox, when) is kept as ground truth for the metrics.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from devkit.sandbox import DIALECT_MOUNTS
from devkit.simulate.model import Window
from devkit.simulate.records import Clock, due_next, progress
from devkit.simulate.scenarios import ARM_SLACK_MINUTES, Burst, Plan
from devkit.simulate.timing import Compression
from devkit.worker_process import WorkerProcess
from statemachine.store.db import Sessionmaker

PROGRESS_EVERY_MINUTES = 10.0
ARM_RETRY_MINUTES = 0.5

Action = Callable[[float], Awaitable[float | None]]  # gets the current minute; may return a minute to run again


@dataclass
class GroundTruth:
    """What the driver really did, in simulated minutes."""

    revoked: dict[int, float] = field(default_factory=dict)  # mailbox id -> when
    bursts: int = 0
    outage: Window | None = None
    misconfig: Window | None = None


@dataclass
class Driver:
    plan: Plan
    compression: Compression
    clock: Clock
    sessionmaker: Sessionmaker
    sandbox: httpx.AsyncClient
    worker: WorkerProcess
    tokens: dict[int, str]  # mailbox id -> refresh token (the first; the sandbox follows rotations)
    mounts: dict[int, str]  # mailbox id -> its provider's path in the sandbox server
    untouched: set[int]  # mailbox ids that no per-mailbox fault was armed on yet
    stall_seconds: float  # how long a "timeout" fault hangs (longer than the worker's HTTP timeout)
    say: Callable[[str], None]
    truth: GroundTruth = field(default_factory=GroundTruth)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.plan.scenario}:{self.plan.seed}:revoked")

    async def run(self) -> GroundTruth:
        """Apply every action at its time until the plan's end."""
        queue: list[tuple[float, int, Action]] = []
        order = itertools.count()
        for at, action in self._timeline():
            heapq.heappush(queue, (at, next(order), action))
        while queue:
            at, _, action = heapq.heappop(queue)
            await asyncio.sleep(max(0.0, (self.clock.moment(at) - datetime.now(UTC)).total_seconds()))
            self.worker.check()
            again = await action(self._now())
            if again is not None:
                heapq.heappush(queue, (again, next(order), action))
        return self.truth

    def _now(self) -> float:
        return self.clock.minutes(datetime.now(UTC))

    def _timeline(self) -> list[tuple[float, Action]]:
        plan = self.plan
        steps = int(plan.minutes // PROGRESS_EVERY_MINUTES)
        timeline: list[tuple[float, Action]] = [
            (i * PROGRESS_EVERY_MINUTES, self._progress) for i in range(1, steps + 1)
        ]
        if plan.minutes % PROGRESS_EVERY_MINUTES:
            timeline.append((plan.minutes, self._progress))
        timeline += [(b.at, self._burst_action(b)) for b in plan.bursts]
        timeline += [(at, self._revocation_action(at)) for at in plan.revocations]
        if plan.outage:
            timeline.append((plan.outage.start, self._start_outage))
        if plan.misconfig:
            timeline += [(plan.misconfig.start, self._start_misconfig), (plan.misconfig.end, self._end_misconfig)]
        return timeline

    async def _fault(self, body: dict[str, Any], mount: str = "") -> None:
        (await self.sandbox.post(f"{mount}/_sandbox/faults", json=body)).raise_for_status()

    def _mounts(self) -> set[str]:
        """Where each provider of the mix is served: a misconfiguration (our client) hits them all."""
        return set(self.mounts.values())

    async def _arm(self, planned: float, now: float) -> tuple[int | None, float | None]:
        """An untouched mailbox due within the slack (now touched), or when to look again (None: give up)."""
        until = self.clock.moment(planned + ARM_SLACK_MINUTES)
        async with self.sessionmaker() as session:
            found = await due_next(session, self.untouched, datetime.now(UTC), until)
        if found is not None:
            self.untouched.discard(found)
            return found, None
        retry = now + ARM_RETRY_MINUTES
        return None, retry if retry <= planned + ARM_SLACK_MINUTES else None

    def _burst_action(self, burst: Burst) -> Action:
        async def arm(now: float) -> float | None:
            mailbox_id, retry = await self._arm(burst.at, now)
            if mailbox_id is None:
                return retry
            body: dict[str, Any] = {"mode": burst.mode, "refresh_token": self.tokens[mailbox_id]}
            body["lasts_seconds"] = self.compression.real(burst.minutes * 60)
            if burst.mode == "http_5xx":
                body["status"] = burst.status
            elif burst.mode == "rate_limit":
                body["retry_after"] = round(self.compression.real(burst.retry_after_seconds), 3)
            else:
                body["seconds"] = self.stall_seconds
            await self._fault(body, self.mounts[mailbox_id])
            self.truth.bursts += 1
            return None

        return arm

    def _revocation_action(self, planned: float) -> Action:
        async def revoke(now: float) -> None:
            if not self.untouched:
                return
            mailbox_id = self.rng.choice(sorted(self.untouched))
            self.untouched.discard(mailbox_id)
            await self._fault({"mode": "revoke", "refresh_token": self.tokens[mailbox_id]}, self.mounts[mailbox_id])
            self.truth.revoked[mailbox_id] = self._now()

        return revoke

    async def _start_outage(self, now: float) -> None:
        assert self.plan.outage is not None
        minutes = self.plan.outage.end - self.plan.outage.start
        provider = self.plan.outage_provider
        await self._fault({"mode": "outage", "seconds": self.compression.real(minutes * 60)}, DIALECT_MOUNTS[provider])
        self.truth.outage = Window(now, now + minutes)
        self.say(f"minute {now:5.1f}: {provider} outage begins ({minutes:g} min of 503 for its every token request)")

    async def _start_misconfig(self, now: float) -> None:
        for mount in self._mounts():
            await self._fault({"mode": "invalid_client"}, mount)
        self.truth.misconfig = Window(now, now)
        self.say(f"minute {now:5.1f}: our client secret is rejected (invalid_client for every token request)")

    async def _end_misconfig(self, now: float) -> None:
        for mount in self._mounts():
            (await self.sandbox.delete(f"{mount}/_sandbox/faults", params={"provider": "1"})).raise_for_status()
        if self.truth.misconfig is not None:
            self.truth.misconfig = Window(self.truth.misconfig.start, now)
        self.say(f"minute {now:5.1f}: client secret fixed")

    async def _progress(self, now: float) -> None:
        async with self.sessionmaker() as session:
            line = (await progress(session)).line()
        self.say(f"minute {min(now, self.plan.minutes):5.1f}/{self.plan.minutes:g}: {line}")
