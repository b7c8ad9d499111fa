"""A TCP proxy in front of the sandbox's token endpoint that can reset connections (RST, no answer).

A reset happens before a request's bytes reach the provider (a new connection, or the next request on a
kept-alive one), as when a load balancer or firewall drops the connection: the request certainly did not
arrive whole, so no refresh token rotated behind our back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    writer.transport.abort()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_data: Callable[[], bool] = lambda: True
) -> None:
    """Copy bytes until EOF; `on_data` is asked before each chunk is passed on (False: stop here)."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            if not on_data():
                return
            writer.write(data)
            await writer.drain()
    writer.close()


class ResettingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.resetting = False
        self.resets = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.resetting:
            self.resets += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _reset(writer)
            return

        def forward_request() -> bool:
            if not self.resetting:
                return True
            self.resets += 1
            _reset(writer)
            up_writer.transport.abort()
            return False

        await asyncio.gather(_pipe(reader, up_writer, forward_request), _pipe(up_reader, writer))
