"""The chaos run's webhook receiver and its ordering check, without the run."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks import Webhook

from devkit.chaos import webhooks
from devkit.chaos.webhook_checks import out_of_order
from devkit.chaos.webhooks import webhook_receiver

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def signed(message_id: str, body: str, secret: str = SECRET) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }


async def test_the_receiver_takes_signed_events_and_answers_500_or_drops_as_rolled(monkeypatch) -> None:
    async with webhook_receiver() as (url, receiver), httpx.AsyncClient(timeout=5) as client:
        receiver.secret = SECRET
        rolls = iter([0.5, 0.12, 0.01])  # taken, 500, dropped
        monkeypatch.setattr(webhooks.random, "random", lambda: next(rolls))
        assert (await client.post(url, content="{}", headers=signed("msg_1", "{}"))).status_code == 200
        assert (await client.post(url, content="{}", headers=signed("msg_2", "{}"))).status_code == 500
        with pytest.raises(httpx.TransportError):
            await client.post(url, content="{}", headers=signed("msg_3", "{}"))
        other = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
        assert (await client.post(url, content="{}", headers=signed("msg_4", "{}", other))).status_code == 400
    assert receiver.taken == {"msg_1"}
    assert set(receiver.bodies) == {"msg_1", "msg_2", "msg_3"}  # a drop may still have been read
    assert (receiver.errors, receiver.dropped, receiver.bad_signatures) == (1, 1, 1)


def change(sequence: int, from_state: str, to_state: str, mailbox_id: int = 1) -> str:
    data = {"mailbox_id": mailbox_id, "sequence": sequence, "from_state": from_state, "to_state": to_state}
    return json.dumps({"type": "mailbox.state_changed", "data": data})


def test_a_mailbox_whose_events_chain_in_sequence_order_is_in_order() -> None:
    bodies = [change(9, "retrying", "healthy"), change(4, "healthy", "retrying"), change(5, "a", "b", mailbox_id=2)]
    assert out_of_order(bodies) == 0


def test_a_broken_chain_or_a_repeated_sequence_is_out_of_order() -> None:
    assert out_of_order([change(4, "healthy", "retrying"), change(9, "healthy", "degraded")]) == 1
    assert out_of_order([change(4, "healthy", "retrying"), change(4, "retrying", "healthy", mailbox_id=1)]) == 1
