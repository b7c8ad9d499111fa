"""Mailboxes accept only the registered providers: 'microsoft' leaves the CHECK until it has an adapter.

The list follows `statemachine.providers.registry.NAMES`; registering a provider means a migration like
this one (docs/providers.md). Upgrading fails, changing nothing, if a mailbox names an unregistered provider.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

from statemachine.store.migrations import set_provider_check

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    set_provider_check(("google",))


def downgrade() -> None:
    set_provider_check(("google", "microsoft"))
