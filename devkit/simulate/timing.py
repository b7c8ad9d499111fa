"""Time compression for `tokenwarden simulate`: every policy delay scaled through the worker's environment.

Why through configuration: the simulation must run the real worker, unchanged, on the real clock. So
a simulated minute becomes `minute_seconds` real seconds by dividing every delay the worker reads
(cycle delays, minimum ages, lead time, scan interval...) by the same factor. Some settings have a
floor (the scan runs at most once a real second; a token request needs a little real time); those
are raised to the floor and reported, so nobody mistakes a stretched value for the configured one.
"""

from __future__ import annotations

from dataclasses import dataclass

from statemachine.services.settings import Settings

SECONDS_PER_DAY = 86400.0
SIMULATED_TOKEN_LIFETIME = 3600  # Google's access tokens live an hour
HTTP_TIMEOUT_FLOOR = 0.5  # a loaded local machine must not turn slow answers into timeouts
LEASE_FLOOR = 20.0  # a cycle (three tries with timeouts and backoff) must end well inside its lease
SHUTDOWN_GRACE_SECONDS = 5.0


class CompressionError(ValueError):
    """The requested compression cannot be expressed in settings the worker accepts."""


@dataclass(frozen=True)
class Scaled:
    """One setting as simulated and as the worker gets it; `floored` when the floor won over the scaling."""

    name: str
    simulated: str
    real: str
    floored: bool


@dataclass(frozen=True)
class Compression:
    """Real seconds per simulated minute, and conversions both ways."""

    minute_seconds: float

    @property
    def factor(self) -> float:
        """Real seconds per simulated second."""
        return self.minute_seconds / 60.0

    @property
    def speedup(self) -> float:
        return 1.0 / self.factor

    def real(self, simulated_seconds: float) -> float:
        return simulated_seconds * self.factor

    def simulated_minutes(self, real_seconds: float) -> float:
        return real_seconds / self.minute_seconds

    def describe(self) -> str:
        return f"1 simulated minute = {self.minute_seconds:g} real s ({self.speedup:,.0f}x faster than real time)"


def _num(value: float) -> str:
    return f"{value:.6g}"


def _scale(c: Compression, name: str, simulated: float, floor: float = 0.0) -> Scaled:
    real = c.real(simulated)
    return Scaled(name, _num(simulated), _num(max(real, floor)), real < floor)


def scaled_settings(settings: Settings, c: Compression) -> list[Scaled]:
    """Every time setting the worker reads, scaled; the floors are the minimums the settings accept."""
    p, i = settings.policy, settings.incidents
    delays = [c.real(d) for d in p.cycle_delays_seconds]
    scan = max(1.0, round(c.real(settings.scan_interval_seconds)))  # arq's cron ticks in whole seconds
    reminders = [c.real(d * SECONDS_PER_DAY) / SECONDS_PER_DAY for d in settings.reminder_days]
    return [
        Scaled(
            "TOKENWARDEN_CYCLE_DELAYS_SECONDS",
            ",".join(_num(d) for d in p.cycle_delays_seconds),
            ",".join(_num(max(d, 1.0)) for d in delays),
            min(delays) < 1.0,
        ),
        _scale(c, "TOKENWARDEN_DEGRADE_MIN_AGE_SECONDS", p.degrade_min_age_seconds),
        _scale(c, "TOKENWARDEN_DISCONNECT_MIN_AGE_SECONDS", p.disconnect_min_age_seconds),
        _scale(c, "TOKENWARDEN_CONFIRM_PERMANENT_SECONDS", p.confirm_permanent_seconds),
        _scale(c, "TOKENWARDEN_REFRESH_LEAD_SECONDS", p.refresh_lead_seconds, 1.0),
        _scale(c, "TOKENWARDEN_REPROBE_SECONDS", p.reprobe_seconds, 1.0),
        _scale(c, "TOKENWARDEN_MIN_REFRESH_INTERVAL_SECONDS", p.min_refresh_interval_seconds, 1.0),
        Scaled(
            "TOKENWARDEN_SCAN_INTERVAL_SECONDS",
            _num(settings.scan_interval_seconds),
            _num(scan),
            c.real(settings.scan_interval_seconds) < 1.0,
        ),
        _scale(c, "TOKENWARDEN_INCIDENT_WINDOW_SECONDS", i.window_seconds, 1.0),
        _scale(c, "TOKENWARDEN_INCIDENT_RECOVERY_SPREAD_SECONDS", i.recovery_spread_seconds),
        Scaled(
            "TOKENWARDEN_REMINDER_DAYS",
            ",".join(_num(d) for d in settings.reminder_days),
            ",".join(_num(d) for d in reminders),
            False,
        ),
        _scale(c, "TOKENWARDEN_RETRY_BASE_SECONDS", settings.retry_base_seconds),
        _scale(c, "TOKENWARDEN_RETRY_MAX_SECONDS", settings.retry_max_seconds),
        _scale(c, "TOKENWARDEN_HTTP_TIMEOUT_SECONDS", settings.http_timeout_seconds, HTTP_TIMEOUT_FLOOR),
        _scale(c, "TOKENWARDEN_LEASE_SECONDS", settings.lease_seconds, LEASE_FLOOR),
        _scale(c, "TOKENWARDEN_OUTBOX_INTERVAL_SECONDS", settings.outbox_interval_seconds, 1.0),
        _scale(c, "TOKENWARDEN_EXACT_TIMING_SECONDS", settings.exact_timing_seconds),
        _scale(c, "TOKENWARDEN_OUTBOX_RETRY_BASE_SECONDS", settings.outbox_retry_base_seconds),
    ]


def worker_environment(settings: Settings, c: Compression) -> dict[str, str]:
    """The scaled TOKENWARDEN_* variables, plus what a simulated worker needs (no metrics port, short grace)."""
    env = {s.name: s.real for s in scaled_settings(settings, c)}
    lead, scan = float(env["TOKENWARDEN_REFRESH_LEAD_SECONDS"]), float(env["TOKENWARDEN_SCAN_INTERVAL_SECONDS"])
    if lead <= scan:
        minimum = 60.0 * scan / settings.policy.refresh_lead_seconds
        raise CompressionError(
            f"--minute-seconds {c.minute_seconds:g} compresses the refresh lead time ({lead:g} s) below the "
            f"one-second scan interval; use more than {minimum:g}"
        )
    env["TOKENWARDEN_METRICS_PORT"] = "0"  # several workers (and the demo) must not fight over a port
    env["TOKENWARDEN_SHUTDOWN_GRACE_SECONDS"] = _num(SHUTDOWN_GRACE_SECONDS)
    return env


def token_lifetime(c: Compression) -> int:
    """The sandbox's `expires_in` in real seconds (a whole number, as Google sends it)."""
    return max(2, round(c.real(SIMULATED_TOKEN_LIFETIME)))


def describe(settings: Settings, c: Compression) -> list[str]:
    """Lines for the terminal: the compression, then each scaled setting (simulated -> real)."""
    lines = [f"time compression: {c.describe()}"]
    lines.append(f"  access-token lifetime (sandbox): {SIMULATED_TOKEN_LIFETIME} s -> {token_lifetime(c)} s")
    for s in scaled_settings(settings, c):
        note = "  (raised to its floor)" if s.floored else ""
        lines.append(f"  {s.name}: {s.simulated} -> {s.real}{note}")
    return lines
