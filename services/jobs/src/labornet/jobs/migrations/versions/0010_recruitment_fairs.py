"""Joint recruitment events: the event, the vacancies each co-organiser lists, registrations.

Revision ID: jobs_0010
Revises: jobs_0009
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "jobs_0010"
down_revision: str | None = "jobs_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recruitment_fair",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("organiser_province", sa.String(length=6), nullable=False),
        sa.Column("co_organisers", sa.JSON(), nullable=False),
        sa.Column("provinces", sa.String(length=300), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("campaign", sa.String(length=40), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=True),
        sa.Column("division_code", sa.String(length=6), nullable=True),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("registration_closes_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("cancel_reason", sa.String(length=500), nullable=True),
        sa.Column("outcomes", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("statistics_generation", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("statistics_as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("registration_counts", sa.JSON(), nullable=False),
        sa.Column("statistics_due", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recruitment_fair")),
    )
    op.create_index("ix_recruitment_fair_starts_on", "recruitment_fair", ["starts_on", "id"], unique=False)
    op.create_index("ix_recruitment_fair_organiser", "recruitment_fair", ["organiser_province", "status"], unique=False)
    op.create_table(
        "recruitment_fair_listing",
        sa.Column("fair_id", sa.String(length=40), nullable=False),
        sa.Column("province", sa.String(length=6), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("fair_version", sa.Integer(), nullable=False),
        sa.Column("vacancy_ids", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("fair_id", "province", name=op.f("pk_recruitment_fair_listing")),
    )
    op.create_table(
        "fair_registration",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("fair_id", sa.String(length=40), nullable=False),
        sa.Column("organiser_province", sa.String(length=6), nullable=False),
        sa.Column("home_province", sa.String(length=6), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("active_fair", sa.String(length=40), nullable=True),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("occupations", sa.JSON(), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fair_registration")),
        sa.UniqueConstraint("worker", "active_fair", name="uq_fair_registration_worker_active_fair"),
    )
    op.create_index("ix_fair_registration_fair", "fair_registration", ["fair_id", "status"], unique=False)
    op.create_index("ix_fair_registration_worker", "fair_registration", ["worker", "submitted_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_fair_registration_worker", table_name="fair_registration")
    op.drop_index("ix_fair_registration_fair", table_name="fair_registration")
    op.drop_table("fair_registration")
    op.drop_table("recruitment_fair_listing")
    op.drop_index("ix_recruitment_fair_organiser", table_name="recruitment_fair")
    op.drop_index("ix_recruitment_fair_starts_on", table_name="recruitment_fair")
    op.drop_table("recruitment_fair")
