"""Worker tables: outbox delivery locks, cycle outcomes (incident window, success rate), provider incidents.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("notifications", sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "refresh_outcomes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("mailbox_id", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('success', 'transient', 'permanent', 'config')", name=op.f("ck_refresh_outcomes_outcome")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_outcomes")),
    )
    op.create_index("ix_refresh_outcomes_provider_at", "refresh_outcomes", ["provider", "at"])
    op.create_table(
        "incidents",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=8), server_default="open", nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("failure_ratio", sa.Float(), nullable=True),
        sa.Column("mailboxes_affected", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_incidents_status")),
        sa.CheckConstraint("(status = 'open') = (closed_at IS NULL)", name=op.f("ck_incidents_closed_when_closed")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    op.create_index(
        "uq_incidents_one_open_per_provider",
        "incidents",
        ["provider"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_index(
        "uq_incidents_one_open_per_provider", table_name="incidents", postgresql_where=sa.text("status = 'open'")
    )
    op.drop_table("incidents")
    op.drop_index("ix_refresh_outcomes_provider_at", table_name="refresh_outcomes")
    op.drop_table("refresh_outcomes")
    op.drop_column("notifications", "locked_until")
