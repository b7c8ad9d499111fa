"""One row per provider saying when the fleet may next count its incident window.

Why: at the onset of an outage every cycle fails, and each process counted the provider's window on
its own schedule (N workers, N times the cost). A failing cycle now counts only after claiming the
provider's row with one conditional UPDATE, so one count per interval runs in the whole fleet.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "incident_window_checks",
        sa.Column("provider", sa.String(16), primary_key=True),
        sa.Column("next_count_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_cycles", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("incident_window_checks")
