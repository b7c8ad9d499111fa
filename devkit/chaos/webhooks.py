"""A webhook receiver on 127.0.0.1 that verifies each signature, answers 500 now and then, and drops some
connections after reading the whole request.

A drop after the body is the worst moment for a sender, as for SMTP after DATA: the event may have been
taken, so it is sent again. The receiver records what it read either way (an endpoint may have acted
on it), which is what makes "duplicates only with the same webhook-id" a real check.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator

from standardwebhooks import Webhook, WebhookVerificationError

from statemachine.core.secrets import TokenCipher
from statemachine.services.settings import Settings
from statemachine.services.webhook_endpoints import create_endpoint
from statemachine.store.db import Sessionmaker
from statemachine.store.models import WEBHOOK_EVENT_TYPES

SERVER_ERROR_SHARE = 0.15
DROP_SHARE = 0.10


class WebhookReceiver:
    def __init__(self) -> None:
        self.secret = ""  # set once the endpoint is registered; its secret is shown only then
        self.bodies: defaultdict[str, set[str]] = defaultdict(set)  # webhook-id -> every body it came with
        self.receipts: Counter[str] = Counter()  # webhook-id -> times read with a good signature
        self.taken: set[str] = set()  # webhook-ids answered 2xx
        self.bad_signatures = self.errors = self.dropped = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (answered with `Connection: close`)."""
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
            body = (await reader.readexactly(int(headers.get("content-length", "0")))).decode()
            status = self._receive(headers, body)
            if status is None:
                writer.transport.abort()
                return
            writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
            await writer.drain()
        writer.close()

    def _receive(self, headers: dict[str, str], body: str) -> int | None:
        """The status to answer (None: drop the connection); records the delivery unless its signature is bad."""
        try:
            Webhook(self.secret).verify(body, headers, json_parse=False)
        except WebhookVerificationError:
            self.bad_signatures += 1
            return 400
        message_id = headers["webhook-id"]
        self.bodies[message_id].add(body)
        self.receipts[message_id] += 1
        roll = random.random()
        if roll < DROP_SHARE:
            self.dropped += 1
            return None
        if roll < DROP_SHARE + SERVER_ERROR_SHARE:
            self.errors += 1
            return 500
        self.taken.add(message_id)
        return 200


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[str, WebhookReceiver]]:
    receiver = WebhookReceiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks", receiver
    finally:
        server.close()


async def subscribe(sessionmaker: Sessionmaker, settings: Settings, url: str, receiver: WebhookReceiver) -> None:
    """Register `url` for every event type, as `POST /v1/webhook-endpoints` would; the receiver keeps the secret."""
    async with sessionmaker() as session, session.begin():
        cipher = TokenCipher(settings.encryption_keys)
        _, receiver.secret = await create_endpoint(session, cipher, url, list(WEBHOOK_EVENT_TYPES), allow_private=True)
