"""One open incident per cause, not per provider: an `invalid_grant` storm may begin during an outage.

Incidents get a `kind` (transient, permanent or config: what they hold back); a transient incident
has no code, a code incident its one code. The unique partial index on the provider becomes two:
one open transient incident per provider, one open incident per provider and code.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_TRANSIENT = sa.text("status = 'open' AND code IS NULL")
OPEN_CODE = sa.text("status = 'open' AND code IS NOT NULL")
OPEN = sa.text("status = 'open'")
# A code incident's kind is that of its code's recent outcomes; with none left (they are kept 48 h),
# the dead-grant codes of oauth-errors.md are permanent and the rest config.
BACKFILL = """
UPDATE incidents SET kind = CASE
  WHEN code IS NULL THEN 'transient'
  ELSE coalesce(
    (SELECT o.outcome FROM refresh_outcomes o
      WHERE o.provider = incidents.provider AND o.code = incidents.code AND o.outcome IN ('permanent', 'config')
      LIMIT 1),
    CASE WHEN split_part(code, '/', 1) IN ('invalid_grant', 'interaction_required', 'consent_required',
      'login_required', 'admin_policy_enforced', 'policy_enforced', 'user_password_expired')
    THEN 'permanent' ELSE 'config' END)
END
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.add_column("incidents", sa.Column("kind", sa.String(length=16), nullable=True))
    op.execute(BACKFILL)
    op.alter_column("incidents", "kind", nullable=False, server_default="transient")
    op.create_check_constraint("kind", "incidents", "kind IN ('transient', 'permanent', 'config')")
    op.create_check_constraint("code_unless_transient", "incidents", "(kind = 'transient') = (code IS NULL)")
    op.drop_index("uq_incidents_one_open_per_provider", table_name="incidents", postgresql_where=OPEN)
    op.create_index(
        "uq_incidents_one_open_transient", "incidents", ["provider"], unique=True, postgresql_where=OPEN_TRANSIENT
    )
    op.create_index(
        "uq_incidents_one_open_per_code", "incidents", ["provider", "code"], unique=True, postgresql_where=OPEN_CODE
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    # one open incident per provider again: the newer ones of a provider are closed
    op.execute(
        "UPDATE incidents SET status = 'closed', closed_at = now() WHERE status = 'open' AND id NOT IN "
        "(SELECT min(id) FROM incidents WHERE status = 'open' GROUP BY provider)"
    )
    op.drop_index("uq_incidents_one_open_per_code", table_name="incidents", postgresql_where=OPEN_CODE)
    op.drop_index("uq_incidents_one_open_transient", table_name="incidents", postgresql_where=OPEN_TRANSIENT)
    op.create_index("uq_incidents_one_open_per_provider", "incidents", ["provider"], unique=True, postgresql_where=OPEN)
    op.drop_constraint("code_unless_transient", "incidents", type_="check")
    op.drop_constraint("kind", "incidents", type_="check")
    op.drop_column("incidents", "kind")
