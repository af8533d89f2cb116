"""Platform tables, version 2: receipts owed for directed messages, and the broker the service last published to.

Revision ID: jobs_0006
Revises: jobs_0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from labornet.shared.migrations import downgrade_platform_v2, upgrade_platform_v2

revision: str = "jobs_0006"
down_revision: str | None = "jobs_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    upgrade_platform_v2()


def downgrade() -> None:
    downgrade_platform_v2()
