"""The webhook promises of a chaos run, checked against the outbox rows and what the receiver read.

Why each one: an event not delivered is a change a subscriber never hears of; a `webhook-id` seen with
two bodies, or one event under two ids, defeats the receiver's de-duplication on the id; a mailbox's
events whose sequence order does not follow its state changes would mislead a receiver that orders by it.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import text

from devkit.chaos.checks import Promise
from devkit.chaos.webhooks import WebhookReceiver
from statemachine.store.db import Sessionmaker


def _event_key(body: str) -> str:
    """The event itself, without its sequence number: two ids with one key are one event sent twice."""
    event: dict[str, Any] = json.loads(body)
    data = {k: v for k, v in event["data"].items() if k != "sequence"}
    return json.dumps({"type": event["type"], "data": data}, sort_keys=True)


def out_of_order(bodies: list[str]) -> int:
    """Mailboxes whose events, in sequence order, do not chain (each from_state the previous to_state)."""
    by_mailbox: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
    for body in bodies:
        data = json.loads(body)["data"]
        if "mailbox_id" in data:
            by_mailbox[data["mailbox_id"]].append(data)
    broken = 0
    for events in by_mailbox.values():
        events.sort(key=lambda data: data["sequence"])
        pairs = itertools.pairwise(events)
        broken += any(b["sequence"] == a["sequence"] or b["from_state"] != a["to_state"] for a, b in pairs)
    return broken


async def webhook_promises(sessionmaker: Sessionmaker, receiver: WebhookReceiver) -> list[Promise]:
    async with sessionmaker() as session:
        rows = (await session.execute(text("select message_id, status, body from webhook_deliveries"))).tuples().all()
    stored = {str(message_id): str(body) for message_id, _, body in rows}
    delivered = {str(message_id) for message_id, status, _ in rows if status == "delivered"}
    undelivered = Counter(str(status) for _, status, _ in rows if status != "delivered")
    changed = [mid for mid, bodies in receiver.bodies.items() if bodies != {stored.get(mid)}]
    ids_per_event = Counter(_event_key(next(iter(bodies))) for bodies in receiver.bodies.values())
    twice = sum(n > 1 for n in ids_per_event.values())
    strangers = set(receiver.bodies) - set(stored)
    resent = sum(receiver.receipts.values()) - len(receiver.receipts)
    unordered = out_of_order([next(iter(bodies)) for bodies in receiver.bodies.values()])
    return [
        Promise(
            "every webhook event delivered (outbox rows delivered, each answered 2xx)",
            f"{len(delivered & receiver.taken)} of {len(rows)}"
            + "".join(f", {n} {status}" for status, n in sorted(undelivered.items())),
            bool(rows) and not undelivered and delivered <= receiver.taken,
        ),
        Promise(
            "webhook signatures that failed to verify (standardwebhooks)",
            f"{receiver.bad_signatures}",
            receiver.bad_signatures == 0,
        ),
        Promise("webhook-ids received with a body other than their row's", f"{len(changed)}", not changed),
        Promise(
            "webhook events received under two ids / ids no outbox row has",
            f"{twice} / {len(strangers)}",
            not twice and not strangers,
        ),
        Promise("mailboxes whose webhook sequence does not follow their state changes", f"{unordered}", unordered == 0),
        Promise(
            "webhooks received twice (same webhook-id: a resend after a 500 or a drop) / 500s / drops",
            f"{resent} / {receiver.errors} / {receiver.dropped}",
            True,
        ),
    ]
