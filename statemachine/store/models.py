"""SQLAlchemy models: users, mailboxes, their append-only state history, and the email outbox.

The three `token_refresh_*` columns and their partial index keep the names of the original plan.
States are TEXT with a CHECK constraint rather than a Postgres ENUM, so adding a state is one
constraint change. Every timestamp is TIMESTAMPTZ and written from aware UTC values.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    Sequence,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from statemachine.core.states import FailureKind, State
from statemachine.providers import registry

OUTBOX_STATUSES = ("pending", "sent", "failed")
WEBHOOK_EVENT_TYPES = (
    "mailbox.state_changed",
    "mailbox.connected",
    "mailbox.removed",
    "provider_incident.opened",
    "provider_incident.closed",
)
WEBHOOK_DELIVERY_STATUSES = ("pending", "delivered", "failed")
REVOCATION_STATUSES = ("pending", "revoked", "failed")
FAILURE_KINDS = tuple(kind.value for kind in FailureKind)


def one_of(column: str, values: tuple[str, ...]) -> str:
    """A CHECK expression limiting a TEXT column to `values` (no Postgres ENUM: see the module docstring)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    is_admin: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Mailbox(Base):
    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(Text)
    provider_subject: Mapped[str | None] = mapped_column(Text)
    granted_scope: Mapped[str | None] = mapped_column(Text)  # as the provider's last token answer named it
    state: Mapped[str] = mapped_column(String(16), server_default=State.HEALTHY.value)
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    refresh_token_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    access_token_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    access_token_expires_at: Mapped[datetime | None]
    token_refresh_failed_at: Mapped[datetime | None]
    token_refresh_error: Mapped[str | None] = mapped_column(Text)
    token_refresh_attempt_count: Mapped[int] = mapped_column(server_default=text("0"))
    config_failure_count: Mapped[int] = mapped_column(server_default=text("0"))
    failure_kind: Mapped[str | None] = mapped_column(String(16))
    user_notified: Mapped[bool] = mapped_column(server_default=text("false"))
    episode: Mapped[int] = mapped_column(server_default=text("0"))
    revision: Mapped[int] = mapped_column(server_default=text("0"))
    grant_generation: Mapped[int] = mapped_column(server_default=text("0"))  # bumped by each new grant (reconnect)
    next_refresh_at: Mapped[datetime | None]
    lease_owner: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lease_until: Mapped[datetime | None]
    last_refreshed_at: Mapped[datetime | None]
    state_changed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    removed_at: Mapped[datetime | None]  # the host app removed it (DELETE /v1/mailboxes/{id}); kept for history
    auth_failure_reported_at: Mapped[datetime | None]  # the last 401 a host app reported that was acted on

    __table_args__ = (
        CheckConstraint(one_of("state", tuple(s.value for s in State)), name="state"),
        # the registered providers: registering one changes this CHECK, which takes a migration (docs/providers.md)
        CheckConstraint(one_of("provider", registry.NAMES), name="provider"),
        CheckConstraint(one_of("failure_kind", FAILURE_KINDS), name="failure_kind"),
        CheckConstraint("is_active = (state <> 'disconnected')", name="active_matches_state"),
        UniqueConstraint("user_id", "provider", "address", name="uq_mailboxes_user_provider_address"),
        Index(
            "idx_mailboxes_token_refresh_failed",
            "token_refresh_failed_at",
            postgresql_where=text("token_refresh_failed_at IS NOT NULL"),
        ),
        Index("ix_mailboxes_next_refresh_at", "next_refresh_at", postgresql_where=text("next_refresh_at IS NOT NULL")),
        Index("ix_mailboxes_state", "state"),
        Index("ix_mailboxes_created_at", "created_at"),
    )


class MailboxCount(Base):
    """Signed mailbox counts per (provider, state): their sums are the fleet's counts (migration 0009).

    A trigger on `mailboxes` appends +1/-1 rows in the changing transaction; `store.counts.fold`
    sums them into one row per (provider, state) now and then.
    """

    __tablename__ = "mailbox_counts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    mailboxes: Mapped[int] = mapped_column(BigInteger)


class StateTransition(Base):
    """Append-only: a database trigger rejects UPDATE and DELETE (see the first migration)."""

    __tablename__ = "mailbox_state_transitions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="RESTRICT"))
    event: Mapped[str] = mapped_column(String(40))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(server_default=text("0"))
    at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("ix_mailbox_state_transitions_mailbox_at", "mailbox_id", "at", "id"),
        Index("ix_mailbox_state_transitions_changes_at", "at", postgresql_where=text("from_state <> to_state")),
    )


class Notification(Base):
    """The transactional outbox: rendered emails waiting for delivery, one per dedupe key."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[str] = mapped_column(String(48))
    recipient: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str] = mapped_column(Text, unique=True)
    message_id: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(one_of("status", OUTBOX_STATUSES), name="status"),
        Index("ix_notifications_pending", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )


class RefreshOutcome(Base):
    """One row per refresh cycle (healthy ones included): the incident guard's window and the 24 h success rate."""

    __tablename__ = "refresh_outcomes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    mailbox_id: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(16))
    code: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint(one_of("outcome", ("success", *FAILURE_KINDS)), name="outcome"),
        Index("ix_refresh_outcomes_provider_at", "provider", "at"),
    )


class RefreshOutcomeMinute(Base):
    """Cycles per (minute, provider, outcome), counted from `refresh_outcomes` by a cron (migration 0011).

    The ops pages read these instead of a day of raw rows; `store.outcome_minutes` keeps them.
    """

    __tablename__ = "refresh_outcome_minutes"

    minute: Mapped[datetime] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    cycles: Mapped[int] = mapped_column(BigInteger)


class RefreshOutcomeRollup(Base):
    """One row: outcomes before `rolled_up_to` are in `refresh_outcome_minutes` (no row: nothing is yet)."""

    __tablename__ = "refresh_outcome_rollup"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    rolled_up_to: Mapped[datetime]

    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)


OPEN_TRANSIENT = text("status = 'open' AND code IS NULL")
OPEN_CODE = text("status = 'open' AND code IS NOT NULL")


class WindowCheck(Base):
    """When the fleet may next count a provider's incident window (migration 0010).

    At the onset of an outage every cycle fails; one conditional UPDATE of this row lets one cycle in
    the whole fleet count per interval, however many workers there are.
    """

    __tablename__ = "incident_window_checks"

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    next_count_at: Mapped[datetime]
    window_cycles: Mapped[int] = mapped_column(BigInteger)


class Incident(Base):
    """A provider-wide failure: while open, the failures it is about do not escalate and cause no user email."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(8), server_default="open")
    cause: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), server_default="transient")  # what it holds (incident_rules.holds)
    code: Mapped[str | None] = mapped_column(Text)  # None for a transient incident
    failure_ratio: Mapped[float | None]
    mailboxes_affected: Mapped[int] = mapped_column(server_default=text("0"))
    opened_at: Mapped[datetime] = mapped_column(server_default=func.now())
    closed_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("status IN ('open', 'closed')", name="status"),
        CheckConstraint("(status = 'open') = (closed_at IS NULL)", name="closed_when_closed"),
        CheckConstraint(one_of("kind", FAILURE_KINDS), name="kind"),
        CheckConstraint("(kind = 'transient') = (code IS NULL)", name="code_unless_transient"),
        # one open incident per cause: a provider's transient one, and one per code
        Index("uq_incidents_one_open_transient", "provider", unique=True, postgresql_where=OPEN_TRANSIENT),
        Index("uq_incidents_one_open_per_code", "provider", "code", unique=True, postgresql_where=OPEN_CODE),
    )


class RetriedRow:
    """The columns of an outbox row that the worker tries until it is done or `give_up_at` has passed."""

    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    give_up_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]


# Per-mailbox event order for webhook receivers: taken under the mailbox's row lock, so it increases per mailbox.
WEBHOOK_SEQUENCE = Sequence("webhook_event_sequence", metadata=Base.metadata)


class WebhookEndpoint(Base):
    """A host app's receiver: its URL, the exact event types it wants, and its signing secret (encrypted)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(Text))
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    failing_since: Mapped[datetime | None]  # the first failed delivery since the last success
    disabled_at: Mapped[datetime | None]


class WebhookDelivery(RetriedRow, Base):
    """The webhook outbox: one event for one endpoint, written in the transaction of the change it reports.

    `message_id` is the `webhook-id` header, the same on every retry; `body` is stored as sent, so a
    retry carries the same bytes (and a receiver can de-duplicate on the id).
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(40))
    mailbox_id: Mapped[int | None] = mapped_column(BigInteger)
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(one_of("status", WEBHOOK_DELIVERY_STATUSES), name="status"),
        CheckConstraint(one_of("type", WEBHOOK_EVENT_TYPES), name="type"),
        UniqueConstraint("endpoint_id", "message_id", name="uq_webhook_deliveries_endpoint_message"),
        Index("ix_webhook_deliveries_pending", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )


class Revocation(RetriedRow, Base):
    """The revocation outbox: a removed mailbox's grant, revoked at the provider by the worker until it works.

    The encrypted refresh token moves here from the mailbox (never into a Redis job) and is erased
    once the grant is revoked or given up on.
    """

    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="RESTRICT"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    token_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    done_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(one_of("status", REVOCATION_STATUSES), name="status"),
        CheckConstraint("(status = 'pending') = (token_ciphertext IS NOT NULL)", name="token_only_while_pending"),
        Index("ix_revocations_pending", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )
