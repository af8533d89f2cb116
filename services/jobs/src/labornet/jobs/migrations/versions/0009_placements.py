"""Placements: one row per hire between two provinces, and the partners' placement statistics.

Revision ID: jobs_0009
Revises: jobs_0008
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "jobs_0009"
down_revision: str | None = "jobs_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "placement",
        sa.Column("application_id", sa.String(length=40), nullable=False),
        sa.Column("origin_province", sa.String(length=6), nullable=False),
        sa.Column("destination_province", sa.String(length=6), nullable=False),
        sa.Column("hired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("occupation_code", sa.String(length=10), nullable=False),
        sa.Column("target_groups", sa.JSON(), nullable=False),
        sa.Column("announced", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("application_id", name=op.f("pk_placement")),
    )
    op.create_index("ix_placement_origin_month", "placement", ["origin_province", "month"], unique=False)
    op.create_index("ix_placement_destination_month", "placement", ["destination_province", "month"], unique=False)
    op.create_index("ix_placement_announced", "placement", ["announced"], unique=False)
    op.create_table(
        "placement_statistics_origin",
        sa.Column("origin", sa.String(length=6), nullable=False),
        sa.Column("generation", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("origin", name=op.f("pk_placement_statistics_origin")),
    )
    op.create_table(
        "placement_statistics_month",
        sa.Column("origin", sa.String(length=6), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("generation", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("origin", "month", name=op.f("pk_placement_statistics_month")),
    )
    op.create_table(
        "placement_statistics_cell",
        sa.Column("origin", sa.String(length=6), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("counterpart_province", sa.String(length=6), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("occupation_code", sa.String(length=10), nullable=False),
        sa.Column("hires", sa.Integer(), nullable=False),
        sa.Column("target_groups", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint(
            "origin",
            "direction",
            "counterpart_province",
            "month",
            "occupation_code",
            name=op.f("pk_placement_statistics_cell"),
        ),
    )


def downgrade() -> None:
    op.drop_table("placement_statistics_cell")
    op.drop_table("placement_statistics_month")
    op.drop_table("placement_statistics_origin")
    op.drop_index("ix_placement_announced", table_name="placement")
    op.drop_index("ix_placement_destination_month", table_name="placement")
    op.drop_index("ix_placement_origin_month", table_name="placement")
    op.drop_table("placement")
