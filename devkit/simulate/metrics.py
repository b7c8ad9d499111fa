"""The original plan's success metrics, computed from what a simulation recorded: pure functions.

Why pure: the numbers in the README come from here, so each definition is a table test. Every time
is in simulated minutes since the scenario started. A failure *episode* is a run of failed cycles of
one mailbox, from its first failed cycle to the next successful one (or a reconnect); its kind is
that of its first failed cycle. The naive policy the plan replaced (disable on the first failed
cycle, never recover, never email) is replayed on the same recorded cycles: before a mailbox's first
failure both policies make the same cycles, and after it the naive one makes none.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from devkit.simulate.model import (
    DISCONNECTED,
    PERMANENT,
    PERMANENT_EMAIL,
    RECONNECTED_EVENT,
    SUCCESS,
    TRANSIENT,
    Change,
    Cycle,
    Email,
    Episode,
    Truth,
    Window,
)


@dataclass(frozen=True)
class Metrics:
    """One column of the table; None means "does not apply" (e.g. no revoked mailbox failed)."""

    cycles: int
    success_rate: float | None
    transient_episodes: int
    recovered: int
    unsettled: int  # transient episodes still retrying at the end: neither recovered nor given up
    recovery_rate: float | None
    disabled: int
    disabled_share: float
    false_disconnects: int
    revoked_failed: int  # revoked mailboxes that met their first invalid_grant
    revoked_emailed: int
    email_minutes_p50: float | None  # first invalid_grant -> the email accepted by the SMTP server
    email_minutes_p95: float | None
    email_minutes_max: float | None
    episodes: int
    emails: int
    emails_per_episode: float | None
    duplicate_emails: int  # emails beyond the first of one kind in one episode
    outage_emails: int | None  # created during the outage window (None: no outage)
    outage_emails_caused: int | None  # of those, about failure episodes that began in the window
    misconfig_emails: int | None
    misconfig_emails_caused: int | None


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in (0, 1]): a value that occurred, never an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _by_mailbox(cycles: Iterable[Cycle]) -> dict[int, list[Cycle]]:
    grouped: dict[int, list[Cycle]] = defaultdict(list)
    for cycle in sorted(cycles, key=lambda c: (c.at, c.mailbox_id)):
        grouped[cycle.mailbox_id].append(cycle)
    return grouped


def episodes(cycles: Iterable[Cycle], changes: Iterable[Change] = ()) -> list[Episode]:
    """Failure episodes per mailbox: a failed cycle opens one, a success or a reconnect ends it."""
    timeline: list[tuple[float, int, str]] = [(c.at, c.mailbox_id, c.outcome) for c in cycles]
    timeline += [(c.at, c.mailbox_id, RECONNECTED_EVENT) for c in changes if c.event == RECONNECTED_EVENT]
    open_: dict[int, Episode] = {}
    done: list[Episode] = []
    for at, mailbox_id, what in sorted(timeline, key=lambda item: (item[0], item[1])):
        current = open_.get(mailbox_id)
        if what in (SUCCESS, RECONNECTED_EVENT):
            if current is not None:
                done.append(Episode(mailbox_id, current.start, current.kind, at, what == RECONNECTED_EVENT))
                del open_[mailbox_id]
        elif current is None:
            open_[mailbox_id] = Episode(mailbox_id, at, what)
    return sorted([*done, *open_.values()], key=lambda e: (e.mailbox_id, e.start))


def _disconnected_at(changes: Iterable[Change]) -> dict[int, float]:
    """When each mailbox last entered `disconnected`."""
    entered: dict[int, float] = {}
    for change in sorted(changes, key=lambda c: c.at):
        if change.to_state == DISCONNECTED and change.from_state != DISCONNECTED:
            entered[change.mailbox_id] = change.at
    return entered


def _false(disabled_at: Mapping[int, float], revoked: Mapping[int, float]) -> int:
    """Disabled while the grant was still valid: never revoked, or revoked only later."""
    return sum(1 for m, at in disabled_at.items() if m not in revoked or revoked[m] > at)


def _first_permanent_after(cycles: Sequence[Cycle], since: float) -> float | None:
    return next((c.at for c in cycles if c.outcome == PERMANENT and c.at >= since), None)


def email_delays(
    cycles: Iterable[Cycle], emails: Iterable[Email], revoked: Mapping[int, float], tolerance: float
) -> tuple[int, list[float]]:
    """Revoked mailboxes that met invalid_grant, and for each one told: first such cycle -> its email's delivery.

    The notice counts when the SMTP server accepted the email, not when the outbox row was written.
    """
    per_mailbox = _by_mailbox(cycles)
    told: dict[int, list[Email]] = defaultdict(list)
    for email in sorted(emails, key=lambda e: e.created):
        if email.kind == PERMANENT_EMAIL:
            told[email.mailbox_id].append(email)
    failed, delays = 0, []
    for mailbox_id, revoked_at in revoked.items():
        first = _first_permanent_after(per_mailbox.get(mailbox_id, []), revoked_at)
        if first is None:
            continue
        failed += 1
        found = next((e for e in told[mailbox_id] if e.created >= first - tolerance and e.delivered is not None), None)
        if found is not None and found.delivered is not None:
            delays.append(max(0.0, found.delivered - first))
    return failed, delays


def _episode_of(email: Email, mine: Sequence[Episode], tolerance: float) -> int | None:
    """Index of the episode an email belongs to: the latest one started (within tolerance) before it."""
    found = None
    for index, episode in enumerate(mine):
        ends = math.inf if episode.end is None else episode.end + tolerance
        if episode.start - tolerance <= email.created <= ends:
            found = index
    return found


def assign(found: Sequence[Episode], emails: Iterable[Email], tolerance: float) -> list[tuple[Email, Episode | None]]:
    """Each email with the failure episode it belongs to (None: it belongs to none)."""
    per_mailbox: dict[int, list[Episode]] = defaultdict(list)
    for episode in found:
        per_mailbox[episode.mailbox_id].append(episode)
    pairs: list[tuple[Email, Episode | None]] = []
    for email in emails:
        mine = per_mailbox.get(email.mailbox_id, [])
        index = _episode_of(email, mine, tolerance)
        pairs.append((email, None if index is None else mine[index]))
    return pairs


def duplicate_emails(pairs: Iterable[tuple[Email, Episode | None]]) -> tuple[int, int]:
    """(emails that belong to an episode, emails beyond the first of one kind in one episode)."""
    kinds = Counter((episode, email.kind) for email, episode in pairs if episode is not None)
    return sum(kinds.values()), sum(count - 1 for count in kinds.values())


def window_emails(
    pairs: Sequence[tuple[Email, Episode | None]], window: Window | None, revoked: Mapping[int, float]
) -> tuple[int | None, int | None]:
    """Emails created during `window`, and how many of them the window caused.

    Caused: about a failure episode that began in the window, of a mailbox whose grant was still valid
    (a user who revoked access during an outage is rightly told, and that is not the outage's doing).
    """
    if window is None:
        return None, None
    inside = [(email, episode) for email, episode in pairs if email.created in window]
    caused = [
        email
        for email, episode in inside
        if episode is not None and episode.start in window and revoked.get(email.mailbox_id, math.inf) > email.created
    ]
    return len(inside), len(caused)


def _revoked_during(episode: Episode, revoked: Mapping[int, float]) -> bool:
    """The grant was revoked before the episode ended: it became a permanent failure."""
    at = revoked.get(episode.mailbox_id)
    return at is not None and (episode.end is None or at <= episode.end)


def _recovery(found: Sequence[Episode], truth: Truth) -> tuple[int, int, int]:
    """Transient episodes (not those turned permanent): (all, recovered on their own, still retrying at the end)."""
    transient = [e for e in found if e.kind == TRANSIENT and not _revoked_during(e, truth.revoked)]
    recovered = sum(1 for e in transient if e.end is not None and not e.by_reconnect)
    unsettled = sum(1 for e in transient if e.end is None and truth.final_states.get(e.mailbox_id) != DISCONNECTED)
    return len(transient), recovered, unsettled


def ours(
    cycles: Sequence[Cycle], changes: Sequence[Change], emails: Sequence[Email], truth: Truth, tolerance: float
) -> Metrics:
    """The metrics of the run as it happened; `tolerance` (minutes) absorbs clock skew between rows."""
    found = episodes(cycles, changes)
    transient, recovered, unsettled = _recovery(found, truth)
    entered = _disconnected_at(changes)
    disabled = {m: entered.get(m, 0.0) for m, state in truth.final_states.items() if state == DISCONNECTED}
    revoked_failed, delays = email_delays(cycles, emails, truth.revoked, tolerance)
    pairs = assign(found, emails, tolerance)
    assigned, duplicates = duplicate_emails(pairs)
    outage, outage_caused = window_emails(pairs, truth.outage, truth.revoked)
    misconfig, misconfig_caused = window_emails(pairs, truth.misconfig, truth.revoked)
    return Metrics(
        cycles=len(cycles),
        success_rate=ratio(sum(1 for c in cycles if c.outcome == SUCCESS), len(cycles)),
        transient_episodes=transient,
        recovered=recovered,
        unsettled=unsettled,
        recovery_rate=ratio(recovered, transient - unsettled),
        disabled=len(disabled),
        disabled_share=len(disabled) / truth.mailboxes if truth.mailboxes else 0.0,
        false_disconnects=_false(disabled, truth.revoked),
        revoked_failed=revoked_failed,
        revoked_emailed=len(delays),
        email_minutes_p50=percentile(delays, 0.5),
        email_minutes_p95=percentile(delays, 0.95),
        email_minutes_max=max(delays, default=None),
        episodes=len(found),
        emails=len(emails),
        emails_per_episode=ratio(assigned, len(found)),
        duplicate_emails=duplicates,
        outage_emails=outage,
        outage_emails_caused=outage_caused,
        misconfig_emails=misconfig,
        misconfig_emails_caused=misconfig_caused,
    )


def naive(cycles: Sequence[Cycle], truth: Truth) -> Metrics:
    """Replay under the naive policy: each mailbox's cycles up to its first failure, then disabled for good."""
    made = successes = transient = revoked_failed = 0
    disabled: dict[int, float] = {}
    for mailbox_id, mine in _by_mailbox(cycles).items():
        for cycle in mine:
            made += 1
            if cycle.outcome == SUCCESS:
                successes += 1
                continue
            disabled[mailbox_id] = cycle.at
            transient += cycle.outcome == TRANSIENT and mailbox_id not in truth.revoked
            revoked_failed += cycle.outcome == PERMANENT and truth.revoked.get(mailbox_id, math.inf) <= cycle.at
            break
    return Metrics(
        cycles=made,
        success_rate=ratio(successes, made),
        transient_episodes=transient,
        recovered=0,
        unsettled=0,
        recovery_rate=ratio(0, transient),
        disabled=len(disabled),
        disabled_share=len(disabled) / truth.mailboxes if truth.mailboxes else 0.0,
        false_disconnects=_false(disabled, truth.revoked),
        revoked_failed=revoked_failed,
        revoked_emailed=0,
        email_minutes_p50=None,
        email_minutes_p95=None,
        email_minutes_max=None,
        episodes=len(disabled),
        emails=0,
        emails_per_episode=ratio(0, len(disabled)),
        duplicate_emails=0,
        outage_emails=None if truth.outage is None else 0,
        outage_emails_caused=None if truth.outage is None else 0,
        misconfig_emails=None if truth.misconfig is None else 0,
        misconfig_emails_caused=None if truth.misconfig is None else 0,
    )
