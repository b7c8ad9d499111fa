"""Serve an ASGI app with uvicorn on a free loopback port in a background thread.

Why: end-to-end tests (sync, async, browser) and the demo need a real HTTP server that the code under
test reaches over TCP, exactly as it reaches Google, while the test keeps running in its own thread.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp


@dataclass
class RunningServer:
    """A uvicorn server running in a daemon thread; `url` has no trailing slash."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket = field(repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for its thread; open requests get ~1 s to finish.

        It blocks up to `timeout`: from async code call it as `await asyncio.to_thread(server.stop)`.
        """
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError(f"server at {self.url} did not stop within {timeout} s")

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_in_thread(
    app: ASGIApp, host: str = "127.0.0.1", *, port: int = 0, startup_timeout: float = 10.0
) -> RunningServer:
    """Start `app` on `host` and `port` (0: a free one); return once it accepts requests (app lifespan included).

    The socket is bound here and handed to uvicorn, so no other process can take the port in between;
    a port in use raises OSError before any thread starts.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on sockets that say so; without it every
    # keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,  # leave the process's logging setup (pytest's capture) alone
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(startup_timeout)
            sock.close()
            raise RuntimeError(f"uvicorn did not start {app!r} on {host}:{port} (see the uvicorn.error log)")
        time.sleep(0.01)
    url_host = f"[{host}]" if ":" in host else host
    return RunningServer(url=f"http://{url_host}:{port}", server=server, thread=thread, sock=sock)
