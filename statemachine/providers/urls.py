"""Where a provider's endpoints may live: https, or plain http only on this machine.

Client secrets and refresh tokens travel in the token request's body, so plain http to another host
would hand them to anyone on the path. Loopback stays allowed for the tests, the demo and the simulator;
TOKENWARDEN_ALLOW_INSECURE_PROVIDER_URLS=true lifts the rule (a lab network, never production).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_provider_url(url: str, *, allow_insecure: bool) -> str:
    """Return `url` when it may carry secrets; raise ValueError saying why not (the URL holds none itself)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("expected an https:// URL")
    if parts.scheme == "http" and not allow_insecure and not is_loopback(parts.hostname):
        raise ValueError(
            "must be https:// (plain http only on this machine, or with TOKENWARDEN_ALLOW_INSECURE_PROVIDER_URLS=true)"
        )
    return url
