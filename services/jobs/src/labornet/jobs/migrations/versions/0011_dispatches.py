"""Organised dispatch: group transfers of workers and their arrival confirmation.

Revision ID: jobs_0011
Revises: jobs_0010
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "jobs_0011"
down_revision: str | None = "jobs_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispatch",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("origin_province", sa.String(length=6), nullable=False),
        sa.Column("destination_province", sa.String(length=6), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("brand_demand_id", sa.String(length=40), nullable=True),
        sa.Column("fair_id", sa.String(length=40), nullable=True),
        sa.Column("employers", sa.JSON(), nullable=False),
        sa.Column("headcount", sa.Integer(), nullable=False),
        sa.Column("transport", sa.String(length=20), nullable=False),
        sa.Column("departure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("departure_place", sa.String(length=200), nullable=False),
        sa.Column("expected_arrival_on", sa.Date(), nullable=False),
        sa.Column("confirmation_due", sa.Date(), nullable=False),
        sa.Column("escort_name", sa.String(length=50), nullable=False),
        sa.Column("escort_phone", sa.String(length=20), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancellation_reason", sa.Text(), nullable=True),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("headcount_received", sa.Integer(), nullable=True),
        sa.Column("arrival_note", sa.Text(), nullable=True),
        sa.Column("arrival_confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("arrival_plan_version", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch")),
    )
    op.create_index("ix_dispatch_origin_state", "dispatch", ["origin_province", "state", "id"], unique=False)
    op.create_index("ix_dispatch_destination_state", "dispatch", ["destination_province", "state", "id"], unique=False)
    op.create_index("ix_dispatch_state_due", "dispatch", ["state", "confirmation_due"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_dispatch_state_due", table_name="dispatch")
    op.drop_index("ix_dispatch_destination_state", table_name="dispatch")
    op.drop_index("ix_dispatch_origin_state", table_name="dispatch")
    op.drop_table("dispatch")
