"""Platform tables: outbox, outbox streams, inbox, quarantine.

Revision ID: rights_0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from labornet.shared.migrations import downgrade_platform_v1, upgrade_platform_v1

revision: str = "rights_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    upgrade_platform_v1()


def downgrade() -> None:
    downgrade_platform_v1()
