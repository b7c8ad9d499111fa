"""The token POST on the wire: straight on httpx-aiohttp's session when that is the transport, else through httpx.

The token client's transport for a token URL is httpx-aiohttp's `AiohttpTransport` in production (the
client's own, or the mount of the proxy the environment names). Handing it an `httpx.Request` and reading an
`httpx.Response` back cost about a quarter of a refresh's client CPU: 279 -> 207 and 248 -> 189 µs per
refresh without them, where a bare aiohttp POST costs 195 and 178 µs (20 in flight, the two adapters
alternated in one process; the note of issue 12). That was building the request, converting its headers and
timeouts, wrapping the answer's stream. `post_form` makes the call that transport makes, on its session (so
its connection pool, TLS context and proxy), with the same timeouts, and reads the answer itself.

Any other transport gets the httpx request: respx's mock (which patches how the client picks a transport,
so respx keeps mocking at the httpx layer), a test's `MockTransport`. Both paths share the body limit rule.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from aiohttp import BasicAuth, ClientSession, ClientTimeout
from httpx_aiohttp.transport import AiohttpResponseStream, AiohttpTransport

Answer = tuple[int, Mapping[str, str], bytes | None]  # status, headers, the body (None: past the limit)


async def post_form(
    client: httpx.AsyncClient, url: httpx.URL, headers: Mapping[str, str], body: bytes, limit: int
) -> Answer:
    """POST an encoded form to `url` on the transport `client.send` would pick, by the same method.

    `_transport_for_url` is private to httpx, but it is the client's mounts (so its proxies) and exactly
    what respx's httpx mocker patches; constraints.txt pins httpx, and the respx tests fail at once if an
    upgrade renames it. What `send` wraps around the transport (auth flows, redirects, event hooks, cookie
    extraction) the token client has none of: no auth, no hooks, no cookies, and a 3xx is classified.
    """
    transport = client._transport_for_url(url)
    if isinstance(transport, AiohttpTransport):
        return await _on_aiohttp(transport, str(url), headers, body, client.timeout, limit)
    timeouts = {"timeout": client.timeout.as_dict()}
    request = httpx.Request("POST", url, headers=headers, content=body, extensions=timeouts)
    response = await transport.handle_async_request(request)
    try:
        return response.status_code, response.headers, await read_limited(response, limit)
    finally:
        await response.aclose()


async def _on_aiohttp(
    transport: AiohttpTransport, url: str, headers: Mapping[str, str], body: bytes, phases: httpx.Timeout, limit: int
) -> Answer:
    """What `AiohttpTransport.handle_async_request` sends (httpx-aiohttp 0.2), without the httpx objects around it."""
    if not isinstance(transport.client, ClientSession):
        transport.client = transport.get_client()  # as the transport opens its session: on first use
    proxy = transport.proxy
    async with transport.client.post(
        url, data=body, headers=headers, allow_redirects=False, auto_decompress=False, compress=False,
        timeout=ClientTimeout(sock_connect=phases.connect, sock_read=phases.read, connect=phases.pool),
        proxy=str(proxy.url) if proxy else None,
        proxy_auth=BasicAuth(*proxy.auth) if proxy and proxy.auth else None,
        proxy_headers=proxy.headers if proxy else None,
    ) as response:  # fmt: skip
        declared = response.content_length
        if declared is not None and response.headers.get("content-encoding", "identity") == "identity":
            return response.status, response.headers, (await response.read()) if declared <= limit else None
        # undeclared, chunked or encoded: httpx's decoders, counted against the limit as they inflate
        stream = AiohttpResponseStream(response)
        answer = httpx.Response(response.status, headers=response.raw_headers, stream=stream)
        return response.status, response.headers, await read_limited(answer, limit)


async def read_limited(response: httpx.Response, limit: int) -> bytes | None:
    """Read the decoded body, giving up with None past `limit` bytes, before buffering more than that
    (at once when the declared length is past it)."""
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
