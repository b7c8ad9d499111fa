"""Mailboxes accept 'microsoft': it is registered (an adapter, a sandbox and wording).

The provider list follows `statemachine.providers.registry.NAMES` (docs/providers.md). Microsoft accounts are
remembered in the existing `provider_subject` column as "<tid>/<oid>", so no column is added. Downgrading fails,
changing nothing, while a Microsoft mailbox exists.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

from statemachine.store.migrations import set_provider_check

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    set_provider_check(("google", "microsoft"))


def downgrade() -> None:
    set_provider_check(("google",))
