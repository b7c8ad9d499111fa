"""An SMTP server that records each message's Message-ID, and can drop the connection after DATA.

Dropping after DATA is the worst moment for a sender: the message may or may not have been taken,
so it is sent again. The recorder counts such messages as received too (a real relay may deliver
them), which is what makes "duplicates only with the same Message-ID" a real check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from email.parser import BytesParser
from email.policy import default

from aiosmtpd.smtp import SMTP, Envelope, Session

DELIVERY_SECONDS = 0.2  # each mail takes a moment, so a worker killed now and then dies mid-delivery


class RecordingSmtp:
    def __init__(self) -> None:
        self.received: Counter[str] = Counter()  # Message-ID -> times received (accepted or dropped after DATA)
        self.dropping = False
        self.dropped = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        self.received[str(BytesParser(policy=default).parsebytes(raw, headersonly=True)["Message-ID"])] += 1
        await asyncio.sleep(DELIVERY_SECONDS)
        if self.dropping:
            self.dropped += 1
            if isinstance(server.transport, asyncio.Transport):
                server.transport.abort()
            return "421 dropped"  # never reaches the client: the connection is gone
        return "250 OK"


@contextlib.asynccontextmanager
async def recording_smtp() -> AsyncIterator[tuple[str, RecordingSmtp]]:
    loop = asyncio.get_running_loop()
    recorder = RecordingSmtp()
    server = await loop.create_server(lambda: SMTP(recorder, hostname="smtp.chaos.test", loop=loop), "127.0.0.1", 0)
    try:
        yield f"smtp://127.0.0.1:{server.sockets[0].getsockname()[1]}", recorder
    finally:
        server.close()
