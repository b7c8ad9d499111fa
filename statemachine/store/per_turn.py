"""Requests made in one turn of the event loop, sent together: how a worker's cycles share their statements.

Why: a cycle's statement is a round trip whose system calls and message handling cost as much CPU as the
cycle's Python around it, and a worker's cycles start and end in bunches (a batch job starts its cycles
together; answers that arrive together end them together). The first request of a turn schedules the send
for the end of that turn (`call_soon`), so no request waits for more than the others made in the same turn.
The send runs in a task of its own: a caller cancelled while waiting (its timeout, a shutdown) does not
cancel the others' requests; its own may still take effect, as a cancelled statement's may.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


class PerTurn(Generic[Request, Result]):
    """`ask(request)` returns its result from `send(requests)`, which gets a turn's requests sorted by `order` and
    returns one result per request, in that order; an error it raises is raised in every request's caller."""

    def __init__(
        self, send: Callable[[list[Request]], Awaitable[list[Result]]], *, order: Callable[[Request], Any]
    ) -> None:
        self._send = send
        self._order = order
        self._asked: list[tuple[Request, asyncio.Future[Result]]] = []
        self._sending: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones

    async def ask(self, request: Request) -> Result:
        loop = asyncio.get_running_loop()
        if not self._asked:
            loop.call_soon(self._flush)
        result: asyncio.Future[Result] = loop.create_future()
        self._asked.append((request, result))
        return await result

    def _flush(self) -> None:
        asked = sorted(self._asked, key=lambda pair: self._order(pair[0]))
        self._asked = []
        task = asyncio.get_running_loop().create_task(self._run(asked))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _run(self, asked: list[tuple[Request, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._send([request for request, _ in asked])
            for (_, waiting), result in zip(asked, results, strict=True):  # a short list: the others raise
                if not waiting.done():
                    waiting.set_result(result)
        except Exception as err:  # each caller raises it, as it would have raised its own statement's
            for _, waiting in asked:
                if not waiting.done():
                    waiting.set_exception(err)
        except asyncio.CancelledError:  # the loop is closing
            for _, waiting in asked:
                waiting.cancel()
            raise
