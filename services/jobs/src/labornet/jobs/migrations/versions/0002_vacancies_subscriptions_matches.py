"""Vacancies (own and replicated), worker subscriptions, matches, webhook deliveries.

Revision ID: jobs_0002
Revises: jobs_0001
Create Date: 2026-11-23 08:03:57.195375
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "jobs_0002"
down_revision: str | None = "jobs_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subscription",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("occupation_codes", sa.JSON(), nullable=False),
        sa.Column("provinces", sa.JSON(), nullable=False),
        sa.Column("division_codes", sa.JSON(), nullable=False),
        sa.Column("min_salary", sa.Integer(), nullable=True),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("target_group", sa.String(length=40), nullable=True),
        sa.Column("webhook_url", sa.String(length=500), nullable=True),
        sa.Column("webhook_secret", sa.String(length=128), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription")),
    )
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.create_index("ix_subscription_worker", ["worker", "active"], unique=False)

    op.create_table(
        "vacancy",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_province", sa.String(length=6), nullable=False),
        sa.Column("employer_name", sa.String(length=200), nullable=False),
        sa.Column("employer_credit_code", sa.String(length=18), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("occupation_code", sa.String(length=10), nullable=False),
        sa.Column("occupation_name", sa.String(length=200), nullable=False),
        sa.Column("division_code", sa.String(length=6), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("headcount", sa.Integer(), nullable=False),
        sa.Column("salary_min", sa.Integer(), nullable=False),
        sa.Column("salary_max", sa.Integer(), nullable=False),
        sa.Column("employment_type", sa.String(length=20), nullable=False),
        sa.Column("target_groups", sa.JSON(), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("brand_id", sa.String(length=64), nullable=True),
        sa.Column("contact", sa.String(length=200), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closing_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("search_tokens", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vacancy")),
    )
    with op.batch_alter_table("vacancy", schema=None) as batch_op:
        batch_op.create_index("ix_vacancy_division", ["division_code", "status"], unique=False)
        batch_op.create_index("ix_vacancy_occupation", ["occupation_code", "status"], unique=False)
        batch_op.create_index("ix_vacancy_owner_status", ["owner_province", "status"], unique=False)
        batch_op.create_index("ix_vacancy_salary", ["status", "salary_max", "id"], unique=False)
        batch_op.create_index("ix_vacancy_status_posted", ["status", "posted_at", "id"], unique=False)

    op.create_table(
        "vacancy_match",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("vacancy_id", sa.String(length=40), nullable=False),
        sa.Column("vacancy_version", sa.Integer(), nullable=False),
        sa.Column("vacancy_status", sa.String(length=12), nullable=False),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vacancy_match")),
        sa.UniqueConstraint("subscription_id", "vacancy_id", name="uq_vacancy_match_subscription_vacancy"),
    )
    with op.batch_alter_table("vacancy_match", schema=None) as batch_op:
        batch_op.create_index("ix_vacancy_match_vacancy", ["vacancy_id"], unique=False)
        batch_op.create_index("ix_vacancy_match_worker", ["worker", "id"], unique=False)

    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("match_id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
    )
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_delivery_due", ["delivered_at", "failed_at", "next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_delivery_due")

    op.drop_table("webhook_delivery")
    with op.batch_alter_table("vacancy_match", schema=None) as batch_op:
        batch_op.drop_index("ix_vacancy_match_worker")
        batch_op.drop_index("ix_vacancy_match_vacancy")

    op.drop_table("vacancy_match")
    with op.batch_alter_table("vacancy", schema=None) as batch_op:
        batch_op.drop_index("ix_vacancy_status_posted")
        batch_op.drop_index("ix_vacancy_salary")
        batch_op.drop_index("ix_vacancy_owner_status")
        batch_op.drop_index("ix_vacancy_occupation")
        batch_op.drop_index("ix_vacancy_division")

    op.drop_table("vacancy")
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.drop_index("ix_subscription_worker")

    op.drop_table("subscription")
