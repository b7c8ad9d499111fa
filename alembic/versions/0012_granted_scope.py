"""Mailboxes keep the scope their grant was given, for the access-token answer.

A host app asks for a token to call the mail API with; the scope says what that token may do (a
narrower consent than asked is possible). The provider names it in its token answers; until one
names it, it is NULL.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 17:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("mailboxes", sa.Column("granted_scope", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("mailboxes", "granted_scope")
