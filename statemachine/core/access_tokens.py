"""Storing an access token: one rule for every way a token comes in (a refresh, a reconnect, an add or import).

A missing, zero or negative `expires_in` means "lifetime unknown": the token is kept without an
expiry time, and the next refresh is planned as for a token of the default lifetime
(`Policy.next_refresh_at`). We accept such a value rather than reject it because the access token is
a by-product: the refresh token is what Tokenwarden keeps alive, and a provider answer with an odd
`expires_in` is still a successful refresh or reconnect (failing it would walk a working mailbox
towards disconnection; rejecting it only in an import would make one value mean two things). We do
not store "expired now" either: we do not know that, and operators read the stored time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from statemachine.core.policy import known_lifetime
from statemachine.core.secrets import TokenCipher


class SealedAccessToken(NamedTuple):
    """The two columns an access token is stored in."""

    ciphertext: bytes
    expires_at: datetime | None


def seal_access_token(
    cipher: TokenCipher, mailbox_id: int, access_token: str, expires_in: int | None, now: datetime
) -> SealedAccessToken:
    """Encrypt the token bound to its mailbox; its expiry is `now + expires_in`, or None when unknown."""
    lifetime = known_lifetime(expires_in)
    expires_at = now + timedelta(seconds=lifetime) if lifetime is not None else None
    return SealedAccessToken(cipher.encrypt(access_token, mailbox_id=mailbox_id, role="access"), expires_at)
