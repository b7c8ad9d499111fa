"""A webhook receiver for the tests, served over real HTTP: it records every request and answers as scripted."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """`statuses` are answered in turn (then 200); with `hang_first`, the first request waits for `release`."""

    statuses: list[int] = field(default_factory=list)
    hang_first: bool = False
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.received.append(Received(dict(request.headers), await request.body()))
            self.arrived.set()
            if self.hang_first and len(self.received) == 1:
                await asyncio.to_thread(self.release.wait, 60)
            return Response(status_code=self.statuses.pop(0) if self.statuses else 200)

        return Starlette(routes=[Route("/hooks", hook, methods=["POST"])])
