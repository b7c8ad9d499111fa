"""Encryption at rest: rotation, binding to the row and role, and no leaks through repr."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from statemachine.core.secrets import Secret, TokenCipher, TokenDecryptionError

OLD, NEW = Secret(Fernet.generate_key().decode()), Secret(Fernet.generate_key().decode())


def test_round_trip_and_rotation_to_the_newest_key() -> None:
    ciphertext = TokenCipher([OLD]).encrypt("1//token", mailbox_id=7, role="refresh")
    both = TokenCipher([NEW, OLD])
    assert both.decrypt(ciphertext, mailbox_id=7, role="refresh") == "1//token"
    rotated = both.rotate(ciphertext)
    assert TokenCipher([NEW]).decrypt(rotated, mailbox_id=7, role="refresh") == "1//token"
    with pytest.raises(TokenDecryptionError, match="does not decrypt"):
        TokenCipher([OLD]).decrypt(rotated, mailbox_id=7, role="refresh")


@pytest.mark.parametrize(("mailbox_id", "role"), [(8, "refresh"), (7, "access")])
def test_ciphertext_is_bound_to_its_mailbox_and_role(mailbox_id: int, role: str) -> None:
    cipher = TokenCipher([OLD])
    ciphertext = cipher.encrypt("1//token", mailbox_id=7, role="refresh")
    with pytest.raises(TokenDecryptionError, match="does not belong") as caught:
        cipher.decrypt(ciphertext, mailbox_id=mailbox_id, role=role)
    assert "1//token" not in str(caught.value)


def test_secret_never_shows_itself() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    assert secret.reveal() == "hunter2"
