"""Refresh outcomes rolled up per minute, and how far the rollup has got.

Why: /ops and /api/ops/summary counted 24 h of `refresh_outcomes` on every view (about 24 M rows at
1,000,000 mailboxes on 1-hour tokens: seconds). A worker cron now counts the outcomes into one row per
(minute, provider, outcome); the pages read those rows, plus the raw outcomes of the last few minutes
that are not rolled up yet. No trigger: the refresh cycle writes nothing more than before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "refresh_outcome_minutes",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("cycles", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "provider", "outcome", name=op.f("pk_refresh_outcome_minutes")),
    )
    op.create_table(
        "refresh_outcome_rollup",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("rolled_up_to", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_outcome_rollup")),
        sa.CheckConstraint("id = 1", name=op.f("ck_refresh_outcome_rollup_one_row")),
    )


def downgrade() -> None:
    op.drop_table("refresh_outcome_rollup")
    op.drop_table("refresh_outcome_minutes")
