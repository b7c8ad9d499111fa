"""The demo data set as stories: who owns which mailbox, what happened to it, and what happens next.

Why stories instead of rows: every mailbox reaches its state through real refresh cycles against the
sandbox Google (a fault for one cycle, then the real classification, policy and machine), so its
history, emails and counters are what the service itself would have written. Times are seconds
before the first start; with the demo timings a story of ten minutes is a full episode. The `leave`
fault stays in place when the demo starts, so some stories go on live in front of the visitor.
"""

from __future__ import annotations

from dataclasses import dataclass

OPERATOR = "olivia@demo.test"
USER = "ana@demo.test"
# (email, name, operator?)
USERS = (
    (OPERATOR, "Olivia (operator)", True),
    (USER, "Ana", False),
    ("ben@demo.test", "Ben", False),
    ("chloe@demo.test", "Chloe", False),
    ("support@demo.test", "Support team", False),
)
FLEET_OWNER = "support@demo.test"
FLEET_SIZE = 24  # quiet healthy mailboxes, so an outage hits enough of them for the incident guard to see it
AGE_SECONDS = 900  # when the demo's mailboxes were "connected", before the first start


@dataclass(frozen=True)
class Step:
    """One refresh cycle `ago` seconds before the start; `fault` (a control.MAILBOX_FAULTS mode) makes it fail."""

    ago: float
    fault: str | None = None


@dataclass(frozen=True)
class Story:
    owner: str
    address: str
    steps: tuple[Step, ...]
    leave: str | None = None  # a fault left in place at the start: the live rest of the story
    leave_count: int | None = None  # how many requests it hits (None: until cleared)
    operator_disconnect_ago: float | None = None
    then: str = ""  # what the visitor sees next (documentation only)
    provider: str = "google"


STORIES: tuple[Story, ...] = (
    Story(USER, "ana@gmail.test", (Step(60),), then="stays healthy: refreshed every ~2 min"),
    Story(USER, "ana.work@gmail.test", (Step(500), Step(8, "5xx")), leave="5xx",
          then="retrying now; Google keeps failing: degraded + email after ~45 s, disconnected + email after ~2 min"),
    Story(USER, "ana.sales@gmail.test", (Step(480), Step(45, "5xx"), Step(30, "429"), Step(4, "5xx")),
          then="degraded; Google is fine again, so the next cycle (~1 min) recovers: 'reconnected' email"),
    Story(USER, "ana.old@gmail.test", (Step(600), Step(300, "revoke"), Step(288, "revoke")), leave="revoke",
          then="disconnected (access revoked): reminders at +2/5/10 min until Ana reconnects on the dashboard"),
    Story("ben@demo.test", "ben@gmail.test", (Step(50),)),
    Story("ben@demo.test", "ben.shop@gmail.test", (Step(70),)),
    Story("ben@demo.test", "ben.news@gmail.test", (Step(450), Step(6, "5xx")),
          then="retrying after one blip; the next cycle succeeds and Ben never hears of it"),
    Story("ben@demo.test", "ben.archive@gmail.test",
          (Step(590), Step(420, "5xx"), Step(405, "timeout"), Step(375, "5xx"), Step(315, "5xx")),
          leave="5xx", leave_count=3,  # the three tries of one cycle
          then="disconnected by transient failures; re-probed every 2 min: fails once more, then recovers"),
    Story("ben@demo.test", "ben.team@gmail.test", (Step(430), Step(50, "malformed"), Step(35, "malformed"),
          Step(5, "malformed")), leave="malformed",
          then="degraded; Google keeps answering garbage: disconnected + email within ~1 min (clear it to recover)"),
    Story("chloe@demo.test", "chloe@gmail.test", (Step(40),)),
    Story("chloe@demo.test", "chloe.club@gmail.test", (Step(580),), operator_disconnect_ago=200,
          then="disconnected by an operator: no email, no reminders; Chloe can reconnect"),
    Story(OPERATOR, "olivia@gmail.test", (Step(30),)),
    # Outlook / Microsoft 365: a new refresh token on every refresh, and Microsoft's own reasons
    Story(USER, "ana@contoso.test", (Step(80),), provider="microsoft",
          then="stays healthy: every refresh stores the new refresh token Microsoft sends"),
    Story("ben@demo.test", "ben@fabrikam.test", (Step(560), Step(300, "mfa"), Step(288, "mfa")), leave="mfa",
          provider="microsoft", then="disconnected: his organisation now requires a multi-factor sign-in"),
    Story("chloe@demo.test", "chloe@contoso.test", (Step(540), Step(310, "conditional_access"),
          Step(296, "conditional_access")), leave="conditional_access", provider="microsoft",
          then="disconnected: Conditional Access blocks the app; the email says her IT administrator must help"),
    Story("chloe@demo.test", "chloe.lab@contoso.test", (Step(470), Step(7, "5xx")), leave="5xx", leave_count=3,
          provider="microsoft", then="retrying after a Microsoft 5xx; recovers on its next cycle"),
)  # fmt: skip


def fleet() -> tuple[Story, ...]:
    """The support team's shared inboxes: healthy, their refreshes spread over the next two minutes."""
    return tuple(Story(FLEET_OWNER, f"support-{n:02d}@gmail.test", (Step(4.0 * n),)) for n in range(1, FLEET_SIZE + 1))


def all_stories() -> tuple[Story, ...]:
    return STORIES + fleet()
