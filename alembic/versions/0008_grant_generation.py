"""Mailboxes count their grants, so a refresh of an older grant never overwrites a newer one.

A reconnect stores a new grant and bumps `grant_generation`; a cycle remembers the generation it
leased, and commits a rotated refresh token only while it is still the same.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 11:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("mailboxes", sa.Column("grant_generation", sa.Integer(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    op.drop_column("mailboxes", "grant_generation")
