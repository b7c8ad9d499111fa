"""Mailboxes per (provider, state) kept by a trigger, and two indexes for the 24 h charts.

Why: /ops, /api/ops/summary and every worker's gauges (every 15 s) counted the whole mailboxes table
(170 ms at 1,000,000 rows). The trigger appends a +1/-1 row to `mailbox_counts` whenever a mailbox
is added, removed or changes state or provider, in the same transaction, so the sums are exact; it
only inserts, so concurrent cycles never wait on a shared counter row. A cron folds the rows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNT_CHANGES = """
CREATE FUNCTION mailbox_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO mailbox_counts (provider, state, mailboxes) VALUES (OLD.provider, OLD.state, -1);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO mailbox_counts (provider, state, mailboxes) VALUES (NEW.provider, NEW.state, 1);
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "mailbox_counts",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("mailboxes", sa.BigInteger(), nullable=False),
    )
    op.execute("LOCK TABLE mailboxes IN SHARE MODE")  # no change slips between the backfill and the trigger
    op.execute(COUNT_CHANGES)
    op.execute(
        "CREATE TRIGGER mailbox_counts_follow AFTER INSERT OR DELETE ON mailboxes "
        "FOR EACH ROW EXECUTE FUNCTION mailbox_counts_follow()"
    )
    op.execute(
        "CREATE TRIGGER mailbox_counts_follow_change AFTER UPDATE OF provider, state ON mailboxes FOR EACH ROW "
        "WHEN (OLD.provider IS DISTINCT FROM NEW.provider OR OLD.state IS DISTINCT FROM NEW.state) "
        "EXECUTE FUNCTION mailbox_counts_follow()"
    )
    op.execute(
        "INSERT INTO mailbox_counts (provider, state, mailboxes) "
        "SELECT provider, state, count(*) FROM mailboxes GROUP BY provider, state"
    )
    # the 24 h charts' "connected" and "changed state" read these instead of the whole tables
    op.create_index("ix_mailboxes_created_at", "mailboxes", ["created_at"])
    op.create_index(
        "ix_mailbox_state_transitions_changes_at",
        "mailbox_state_transitions",
        ["at"],
        postgresql_where=sa.text("from_state <> to_state"),
    )


def downgrade() -> None:
    op.drop_index("ix_mailbox_state_transitions_changes_at", table_name="mailbox_state_transitions")
    op.drop_index("ix_mailboxes_created_at", table_name="mailboxes")
    op.execute("DROP TRIGGER mailbox_counts_follow_change ON mailboxes")
    op.execute("DROP TRIGGER mailbox_counts_follow ON mailboxes")
    op.execute("DROP FUNCTION mailbox_counts_follow()")
    op.drop_table("mailbox_counts")
