"""Tokens at rest: Fernet (MultiFernet for key rotation), each ciphertext bound to its mailbox.

The mailbox id and the token's role are inside the encrypted payload and checked on decrypt, so a
ciphertext copied into another row, or an access token swapped into the refresh column, fails to
decrypt instead of being used for the wrong account.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class TokenDecryptionError(Exception):
    """A stored token cannot be decrypted with the configured keys, or belongs to another row."""


class Secret:
    """A string that never shows itself in repr, str or logs; `reveal()` is the only way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class TokenCipher:
    """Encrypts with the first key, decrypts with any of them."""

    def __init__(self, keys: Sequence[Secret]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(key.reveal().encode()) for key in keys])

    @staticmethod
    def _label(mailbox_id: int, role: str) -> bytes:
        return f"tokenwarden:{role}:{mailbox_id}\n".encode()

    def encrypt(self, token: str, *, mailbox_id: int, role: str) -> bytes:
        return self._fernet.encrypt(self._label(mailbox_id, role) + token.encode())

    def decrypt(self, ciphertext: bytes, *, mailbox_id: int, role: str) -> str:
        try:
            payload = self._fernet.decrypt(ciphertext)
        except InvalidToken:
            raise TokenDecryptionError(f"the stored {role} token of mailbox {mailbox_id} does not decrypt") from None
        label = self._label(mailbox_id, role)
        if not payload.startswith(label):
            raise TokenDecryptionError(f"the stored {role} token does not belong to mailbox {mailbox_id}")
        return payload[len(label) :].decode()

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-encrypt under the newest key (the binding inside the payload is kept)."""
        try:
            return self._fernet.rotate(ciphertext)
        except InvalidToken:
            raise TokenDecryptionError("a stored token does not decrypt with any configured key") from None
