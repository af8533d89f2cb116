"""Joint recruitment events: the event, the vacancies each co-organiser lists, registrations.

Revision ID: jobs_0010
Revises: jobs_0009
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "jobs_0010"
down_revision: str | None = "jobs_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
