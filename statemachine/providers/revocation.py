"""Revoking a grant at the provider: RFC 7009 as Google implements it (POST the token; 200, or 400 invalid_token).

Provider-specific only in the URL: Google's is GOOGLE_REVOKE_URL; Microsoft has no per-grant revocation endpoint.
"""

from __future__ import annotations

import httpx


async def revoke_token(http: httpx.AsyncClient, url: str, token: str) -> str | None:
    """None when the grant is gone (revoked now, or already invalid); else what went wrong, never the token."""
    try:
        response = await http.post(url, data={"token": token}, headers={"accept": "application/json"})
    except httpx.HTTPError as err:
        return f"could not reach the revocation endpoint: {type(err).__name__}"
    if response.status_code == 200:
        return None
    if response.status_code == 400 and _error_code(response) == "invalid_token":
        return None  # the token no longer works: nothing left to revoke
    return f"the revocation endpoint answered HTTP {response.status_code}"


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None
