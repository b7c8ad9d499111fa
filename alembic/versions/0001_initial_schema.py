"""Initial schema: users, mailboxes (with the original plan's token_refresh_* columns), history, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 14:46:51.475534
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# History is evidence ("why was this mailbox disconnected, and when?"): the database itself refuses
# to rewrite it. TRUNCATE (used by tests) is a separate privilege and not affected.
APPEND_ONLY_FUNCTION = """
CREATE FUNCTION tokenwarden_reject_history_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'mailbox_state_transitions is append-only (% refused)', TG_OP;
END $$
"""
APPEND_ONLY_TRIGGER = """
CREATE TRIGGER mailbox_state_transitions_append_only
BEFORE UPDATE OR DELETE ON mailbox_state_transitions
FOR EACH ROW EXECUTE FUNCTION tokenwarden_reject_history_change()
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("is_admin", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "mailboxes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("provider_subject", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), server_default="healthy", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("refresh_token_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("access_token_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("access_token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_refresh_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("token_refresh_error", sa.Text(), nullable=True),
        sa.Column("token_refresh_attempt_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("config_failure_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failure_kind", sa.String(length=16), nullable=True),
        sa.Column("user_notified", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("episode", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("revision", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_refresh_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.UUID(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "failure_kind IN ('transient', 'permanent', 'config')", name=op.f("ck_mailboxes_failure_kind")
        ),
        sa.CheckConstraint("is_active = (state <> 'disconnected')", name=op.f("ck_mailboxes_active_matches_state")),
        sa.CheckConstraint("provider IN ('google', 'microsoft')", name=op.f("ck_mailboxes_provider")),
        sa.CheckConstraint(
            "state IN ('healthy', 'retrying', 'degraded', 'disconnected')", name=op.f("ck_mailboxes_state")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mailboxes_user_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailboxes")),
        sa.UniqueConstraint("user_id", "provider", "address", name="uq_mailboxes_user_provider_address"),
    )
    op.create_index(
        "idx_mailboxes_token_refresh_failed",
        "mailboxes",
        ["token_refresh_failed_at"],
        unique=False,
        postgresql_where=sa.text("token_refresh_failed_at IS NOT NULL"),
    )
    op.create_index(
        "ix_mailboxes_next_refresh_at",
        "mailboxes",
        ["next_refresh_at"],
        unique=False,
        postgresql_where=sa.text("next_refresh_at IS NOT NULL"),
    )
    op.create_index("ix_mailboxes_state", "mailboxes", ["state"], unique=False)
    op.create_index(op.f("ix_mailboxes_user_id"), "mailboxes", ["user_id"], unique=False)
    op.create_table(
        "mailbox_state_transitions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("mailbox_id", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=False),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_mailbox_state_transitions_mailbox_id_mailboxes"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailbox_state_transitions")),
    )
    op.create_index(
        "ix_mailbox_state_transitions_mailbox_at", "mailbox_state_transitions", ["mailbox_id", "at", "id"], unique=False
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("mailbox_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name=op.f("ck_notifications_status")),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"], name=op.f("fk_notifications_mailbox_id_mailboxes"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_notifications_dedupe_key")),
        sa.UniqueConstraint("message_id", name=op.f("uq_notifications_message_id")),
    )
    op.create_index(op.f("ix_notifications_mailbox_id"), "notifications", ["mailbox_id"], unique=False)
    op.create_index(
        "ix_notifications_pending",
        "notifications",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(APPEND_ONLY_TRIGGER)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_index(
        "ix_notifications_pending", table_name="notifications", postgresql_where=sa.text("status = 'pending'")
    )
    op.drop_index(op.f("ix_notifications_mailbox_id"), table_name="notifications")
    op.drop_table("notifications")
    op.execute("DROP TRIGGER mailbox_state_transitions_append_only ON mailbox_state_transitions")
    op.execute("DROP FUNCTION tokenwarden_reject_history_change()")
    op.drop_index("ix_mailbox_state_transitions_mailbox_at", table_name="mailbox_state_transitions")
    op.drop_table("mailbox_state_transitions")
    op.drop_index(op.f("ix_mailboxes_user_id"), table_name="mailboxes")
    op.drop_index("ix_mailboxes_state", table_name="mailboxes")
    op.drop_index(
        "ix_mailboxes_next_refresh_at", table_name="mailboxes", postgresql_where=sa.text("next_refresh_at IS NOT NULL")
    )
    op.drop_index(
        "idx_mailboxes_token_refresh_failed",
        table_name="mailboxes",
        postgresql_where=sa.text("token_refresh_failed_at IS NOT NULL"),
    )
    op.drop_table("mailboxes")
    op.drop_table("users")
