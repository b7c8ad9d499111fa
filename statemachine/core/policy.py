"""The escalation and scheduling numbers, as pure functions of counts, ages and the clock.

Nothing here reads the clock or a random source: `now` and `jitter` (a fraction in [0, 1)) are
arguments, so every rule is a table test.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from statemachine.core.states import State

DEFAULT_ACCESS_TOKEN_SECONDS = 3600
MIN_REFRESH_INTERVAL_SECONDS = 60


def known_lifetime(expires_in: int | None) -> int | None:
    """A grant's `expires_in` when it is a lifetime; None (unknown) when missing, zero or negative.

    The one reading of `expires_in` (core/access_tokens.py says why it is not an error).
    """
    return expires_in if expires_in is not None and expires_in > 0 else None


@dataclass(frozen=True)
class Policy:
    """When a failing mailbox climbs the ladder, and when its next cycle runs."""

    degrade_after: int = 2
    disconnect_after: int = 3
    degrade_min_age_seconds: float = 300.0
    disconnect_min_age_seconds: float = 1800.0
    cycle_delays_seconds: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0)
    confirm_permanent_seconds: float = 60.0
    refresh_lead_seconds: float = 600.0
    reprobe_seconds: float = 21600.0
    min_refresh_interval_seconds: float = MIN_REFRESH_INTERVAL_SECONDS  # time-compressed simulations lower it

    def rung(self, attempts: int, episode_age_seconds: float) -> State:
        """The highest rung whose count *and* minimum episode age are both reached."""
        if attempts >= self.disconnect_after and episode_age_seconds >= self.disconnect_min_age_seconds:
            return State.DISCONNECTED
        if attempts >= self.degrade_after and episode_age_seconds >= self.degrade_min_age_seconds:
            return State.DEGRADED
        return State.RETRYING

    def retry_delay_seconds(self, failures: int, jitter: float, retry_after: float | None = None) -> float:
        """Wait after the n-th failed cycle: the n-th configured delay (the last repeats), up to 20 % later.

        A server's Retry-After is a floor: we never come back sooner than it asked.
        """
        index = min(max(failures, 1), len(self.cycle_delays_seconds)) - 1
        delay = self.cycle_delays_seconds[index] * (1.0 + 0.2 * jitter)
        return max(delay, retry_after or 0.0)

    def next_refresh_at(
        self, now: datetime, expires_in: int | None, jitter: float, *, just_refreshed: bool = True
    ) -> datetime:
        """Refresh between 1x and 1.5x the lead time before expiry, spread so a burst of connects spreads out.

        The minimum interval keeps a provider's short-lived tokens from being refreshed in a loop; it follows a
        real refresh only: an imported token that expires soon is refreshed at once.
        """
        lifetime = known_lifetime(expires_in) or DEFAULT_ACCESS_TOKEN_SECONDS
        lead = self.refresh_lead_seconds * (1.0 + 0.5 * jitter)
        floor = self.min_refresh_interval_seconds * (1.0 + jitter) if just_refreshed else 0.0
        return now + timedelta(seconds=max(lifetime - lead, floor))
