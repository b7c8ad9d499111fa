"""Signed values handed to browsers (session cookie, login link, OAuth `state`) and the CSRF token.

Each use has its own itsdangerous salt, so a value signed for one purpose never verifies as another.
A signature only proves we issued the value; single use and revocation come from the rows in
`store.py`, which keep only a SHA-256 of each random secret (a database leak signs nobody in).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

STATE_SECONDS = 600
SESSION_SECONDS = 7 * 24 * 3600
LOGIN_MAX_SECONDS = 7 * 24 * 3600


class InvalidSignedValue(ValueError):
    """A signed value was tampered with, malformed or too old; `expired` tells the two apart."""

    def __init__(self, expired: bool) -> None:
        super().__init__("expired" if expired else "invalid")
        self.expired = expired


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Signing:
    """Signers keyed by TOKENWARDEN_SECRET_KEY; never logs or shows the key."""

    def __init__(self, secret_key: str) -> None:
        self._key = secret_key.encode()
        self._session = URLSafeTimedSerializer(secret_key, salt="tokenwarden.session")
        self._login = URLSafeTimedSerializer(secret_key, salt="tokenwarden.login-link")
        self._state = URLSafeTimedSerializer(secret_key, salt="tokenwarden.oauth-state")

    def __repr__(self) -> str:
        return "Signing(<secret>)"

    def session_cookie(self, session_secret: str) -> str:
        return self._session.dumps(session_secret)

    def session_secret(self, cookie: str) -> str:
        return _loads(self._session, cookie, SESSION_SECONDS)

    def login_token(self, login_secret: str) -> str:
        return self._login.dumps(login_secret)

    def login_secret(self, token: str) -> str:
        return _loads(self._login, token, LOGIN_MAX_SECONDS)

    def state(self, nonce: str) -> str:
        return self._state.dumps(nonce)

    def state_nonce(self, state: str) -> str:
        return _loads(self._state, state, STATE_SECONDS)

    def csrf_token(self, session_secret: str) -> str:
        """Derived from the session secret: nothing to store, and it dies with the session."""
        return hmac.new(self._key, b"csrf:" + session_secret.encode(), hashlib.sha256).hexdigest()


def _loads(serializer: URLSafeTimedSerializer, value: str, max_age: int) -> str:
    try:
        loaded = serializer.loads(value, max_age=max_age)
    except BadSignature as err:  # SignatureExpired is a BadSignature
        raise InvalidSignedValue(expired=isinstance(err, SignatureExpired)) from None
    if not isinstance(loaded, str) or len(loaded) > 200:
        raise InvalidSignedValue(expired=False)
    return loaded
