"""Brands (own and replicated), the origin's register of its brand names, demands for a brand's workers.

Revision ID: brands_0002
Revises: brands_0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "brands_0002"
down_revision: str | None = "brands_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "brand",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("origin_province", sa.String(length=6), nullable=False),
        sa.Column("name_zh", sa.String(length=50), nullable=False),
        sa.Column("name_en", sa.String(length=100), nullable=True),
        sa.Column("normalised_name", sa.String(length=50), nullable=False),
        sa.Column("division_code", sa.String(length=6), nullable=False),
        sa.Column("division_name", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("category_name", sa.String(length=100), nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("cultivating_body_type", sa.String(length=20), nullable=False),
        sa.Column("cultivating_body_name", sa.String(length=200), nullable=False),
        sa.Column("cultivating_body_credit_code", sa.String(length=18), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("training_bases", sa.JSON(), nullable=False),
        sa.Column("destination_regions", sa.JSON(), nullable=False),
        sa.Column("people_trained", sa.Integer(), nullable=False),
        sa.Column("jobs_supported", sa.Integer(), nullable=False),
        sa.Column("annual_labour_income_cny", sa.BigInteger(), nullable=False),
        sa.Column("spokespersons", sa.JSON(), nullable=False),
        sa.Column("trademark_number", sa.String(length=20), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recognised_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("search_tokens", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_brand")),
    )
    with op.batch_alter_table("brand", schema=None) as batch_op:
        batch_op.create_index("ix_brand_category_status", ["category", "status"], unique=False)
        batch_op.create_index("ix_brand_division_status", ["division_code", "status"], unique=False)
        batch_op.create_index("ix_brand_normalised_name", ["normalised_name"], unique=False)
        batch_op.create_index("ix_brand_origin_status", ["origin_province", "status"], unique=False)
        batch_op.create_index("ix_brand_status_jobs", ["status", "jobs_supported", "id"], unique=False)
        batch_op.create_index("ix_brand_status_registered", ["status", "registered_at", "id"], unique=False)

    op.create_table(
        "brand_name_claim",
        sa.Column("normalised_name", sa.String(length=50), nullable=False),
        sa.Column("brand_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("normalised_name", name=op.f("pk_brand_name_claim")),
        sa.UniqueConstraint("brand_id", name=op.f("uq_brand_name_claim_brand_id")),
    )

    op.create_table(
        "demand",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("brand_id", sa.String(length=40), nullable=False),
        sa.Column("brand_name_zh", sa.String(length=50), nullable=False),
        sa.Column("origin_province", sa.String(length=6), nullable=False),
        sa.Column("demanding_province", sa.String(length=6), nullable=False),
        sa.Column("workers", sa.Integer(), nullable=False),
        sa.Column("division_code", sa.String(length=6), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("conditions", sa.Text(), nullable=False),
        sa.Column("contact", sa.String(length=200), nullable=False),
        sa.Column("posted_by", sa.String(length=200), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("workers_offered", sa.Integer(), nullable=True),
        sa.Column("answer_note", sa.Text(), nullable=True),
        sa.Column("answered_by", sa.String(length=200), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demand")),
    )
    with op.batch_alter_table("demand", schema=None) as batch_op:
        batch_op.create_index("ix_demand_brand", ["brand_id"], unique=False)
        batch_op.create_index("ix_demand_posted", ["posted_at", "id"], unique=False)
        batch_op.create_index("ix_demand_status", ["status", "posted_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("demand", schema=None) as batch_op:
        batch_op.drop_index("ix_demand_status")
        batch_op.drop_index("ix_demand_posted")
        batch_op.drop_index("ix_demand_brand")

    op.drop_table("demand")
    op.drop_table("brand_name_claim")
    with op.batch_alter_table("brand", schema=None) as batch_op:
        batch_op.drop_index("ix_brand_status_registered")
        batch_op.drop_index("ix_brand_status_jobs")
        batch_op.drop_index("ix_brand_origin_status")
        batch_op.drop_index("ix_brand_normalised_name")
        batch_op.drop_index("ix_brand_division_status")
        batch_op.drop_index("ix_brand_category_status")

    op.drop_table("brand")
