"""Which network addresses a webhook may be sent to, so the API cannot be used to probe an internal network.

Only globally routable unicast addresses pass; an IPv4-mapped IPv6 address is judged by the IPv4
address inside it (`::ffff:127.0.0.1` is loopback). Pure: resolving names is the caller's I/O.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2000


class WebhookUrlError(ValueError):
    """A webhook URL that is refused; the message says why in plain words."""


def is_public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_loopback or ip.is_link_local or ip.is_private)


def parse_webhook_url(raw: str, *, allow_private: bool) -> SplitResult:
    """The URL's parts, or WebhookUrlError: http(s) only, a host, no credentials, no private IP literal."""
    if len(raw) > MAX_URL_LENGTH:
        raise WebhookUrlError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise WebhookUrlError("the URL does not parse") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookUrlError("a webhook URL starts with http:// or https:// and names a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlError("a webhook URL carries no user name or password")
    if port == 0:
        raise WebhookUrlError("port 0 is not a port")
    if not allow_private and _is_ip(parts.hostname) and not is_public(parts.hostname):
        raise WebhookUrlError("loopback, private and link-local addresses are refused")
    return parts


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
