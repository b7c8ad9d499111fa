"""Requests of one event-loop turn are sent together, in order, and every caller gets its answer or the error."""

from __future__ import annotations

import asyncio

import pytest

from statemachine.store.per_turn import PerTurn


async def test_the_requests_of_one_turn_go_together_sorted_and_each_caller_gets_its_own_result() -> None:
    sent: list[list[int]] = []

    async def send(requests: list[int]) -> list[str]:
        sent.append(requests)
        return [f"answer to {request}" for request in requests]

    per_turn: PerTurn[int, str] = PerTurn(send, order=lambda request: request)
    first = await asyncio.gather(*(per_turn.ask(request) for request in (3, 1, 2)))
    second = await per_turn.ask(7)
    assert sent == [[1, 2, 3], [7]]
    assert (first, second) == (["answer to 3", "answer to 1", "answer to 2"], "answer to 7")


async def test_a_send_that_fails_or_answers_short_raises_in_every_caller_left_instead_of_leaving_it_waiting() -> None:
    async def broken(requests: list[int]) -> list[str]:
        raise ConnectionError("the database went away")

    async def short(requests: list[int]) -> list[str]:
        return ["only one"]

    failing: PerTurn[int, str] = PerTurn(broken, order=int)
    failed = await asyncio.gather(failing.ask(1), failing.ask(2), return_exceptions=True)
    assert [type(error) for error in failed] == [ConnectionError, ConnectionError]
    shortened: PerTurn[int, str] = PerTurn(short, order=int)
    with pytest.raises(ValueError, match="zip"):
        await asyncio.wait_for(asyncio.gather(shortened.ask(1), shortened.ask(2)), timeout=5)
