"""A TCP proxy in front of the sandbox's token endpoint that can reset connections (RST, no answer).

A reset happens before a request's bytes reach the provider (a new connection, or the next request on a
kept-alive one), as when a load balancer or firewall drops the connection: the request certainly did not
arrive whole, so no refresh token rotated behind our back.

It runs on its own thread and event loop, as the sandbox does, not on the harness's: the harness's checks
hold its loop for a while, and a token answer held up past the workers' read timeout (0.5 s in the run)
makes them send the old refresh token again after the provider rotated it. A run on a slow box lost 17
grants so, all at the first check after the faults, none of them to a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
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
    """Forwards to `target_port` on 127.0.0.1; resets every connection while `resetting` is set."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.resetting = False
        self.resets = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)

    def start(self) -> str:
        """Serve on a free port, on the proxy's own thread; return its URL."""
        self._thread.start()
        serving = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = serving.result(10)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        """Stop serving, drop the connections still open (a run's last kept-alive ones), end the thread."""
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _close(self) -> None:
        self._server.close()
        open_connections = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in open_connections:
            task.cancel()
        await asyncio.gather(*open_connections, return_exceptions=True)

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
