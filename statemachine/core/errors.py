"""What a failed token request means, as data (`Verdict`) and as exceptions the adapters raise.

Everything here carries only our own words and sanitised provider codes: never a token, a client
secret, or a raw provider body, so an exception or its message can be logged or stored safely.
"""

from __future__ import annotations

from dataclasses import dataclass

from statemachine.core.states import FailureKind


@dataclass(frozen=True)
class Verdict:
    """The classification of one failed token-endpoint exchange.

    `code` is a short machine code (an OAuth `error` such as `invalid_grant`, or one of ours such as
    `http_503`, `connect_timeout`, `missing_access_token`); `reason` is plain words for people;
    `retry_after` is the server's `Retry-After` in seconds, clamped to [0, 3600], when it sent one;
    `admin` marks permanent failures the user cannot fix alone (a Workspace or tenant policy).
    """

    kind: FailureKind
    code: str
    reason: str
    retry_after: float | None = None
    admin: bool = False

    @property
    def summary(self) -> str:
        """The short, secret-free text stored in `token_refresh_error` and history rows."""
        return f"{self.code}: {self.reason}"


class OAuthError(Exception):
    """A token request failed; `verdict` says how and what to do about it."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.summary)
        self.verdict = verdict
        self.error_code = verdict.code


class OAuthTransientError(OAuthError):
    """The provider or the network is unhealthy, or we are throttled: retry later."""


class OAuthPermanentError(OAuthError):
    """The grant is dead: the user (or their admin) has to reconnect."""


class OAuthConfigError(OAuthError):
    """Our side is at fault (client id or secret, request shape): alert operators, never the user."""


_ERROR_BY_KIND: dict[FailureKind, type[OAuthError]] = {
    FailureKind.TRANSIENT: OAuthTransientError,
    FailureKind.PERMANENT: OAuthPermanentError,
    FailureKind.CONFIG: OAuthConfigError,
}


def error_for(verdict: Verdict) -> OAuthError:
    """Build the exception class that matches the verdict's kind."""
    return _ERROR_BY_KIND[verdict.kind](verdict)
