"""Applications across provinces: the application, its timeline, and the vacancy's hired count.

Revision ID: jobs_0008
Revises: jobs_0007
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "jobs_0008"
down_revision: str | None = "jobs_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
