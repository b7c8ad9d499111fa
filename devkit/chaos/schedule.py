"""The fault schedule, in seconds from the start of the run: pure, printed before the run begins."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    at: float
    name: str
    seconds: float = 0.0  # how long a window lasts (0: a single blow)

    def describe(self) -> str:
        window = f" for {self.seconds:g} s" if self.seconds else ""
        return f"t+{self.at:>5.0f} s  {self.name}{window}"


KILL = "SIGKILL a worker"
SCHEDULE = (
    Fault(15, KILL),
    Fault(25, "token endpoint answers 503", 15),
    Fault(45, KILL),
    Fault(50, "revoke 2 % of the grants at the provider"),
    Fault(52, "SMTP server drops connections after DATA", 20),
    Fault(58, KILL),
    Fault(62, KILL),
    Fault(80, "Redis FLUSHALL"),
    Fault(95, "token endpoint answers 429 (Retry-After 2 s)", 15),
    Fault(115, KILL),
    Fault(120, "Redis restart"),
    Fault(140, "token endpoint hangs", 15),
    Fault(160, "PostgreSQL restart"),
    Fault(175, "token endpoint resets connections", 15),
    Fault(195, KILL),
    Fault(200, "revoke 1 % of the grants at the provider"),
    Fault(202, "SMTP server drops connections after DATA", 15),
    Fault(206, KILL),
    Fault(215, KILL),
)
FAULTS_END = 230.0  # then the suite waits for the fleet to settle, and checks
SETTLE_SECONDS = 120.0  # at most; it checks every few seconds and stops early once every promise holds
