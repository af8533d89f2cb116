"""Insured persons, contribution periods, benefit configuration, transfers and their steps, settlements.

Revision ID: insurance_0002
Revises: insurance_0001
Create Date: 2026-11-23 08:24:16.966743
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "insurance_0002"
down_revision: str | None = "insurance_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "benefit_config",
        sa.Column("province", sa.String(length=6), nullable=False),
        sa.Column("monthly_standard", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("minimum_wage", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("subsistence_line", sa.Numeric(precision=10, scale=2), nullable=False),
        sa.Column("answer_limit_days", sa.Integer(), nullable=False),
        sa.Column("transfer_limit_days", sa.Integer(), nullable=False),
        sa.Column("fund_multiplier", sa.Numeric(precision=4, scale=2), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("province", name=op.f("pk_benefit_config")),
    )
    op.create_table(
        "contribution_period",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("resident_id", sa.String(length=18), nullable=False),
        sa.Column("start_month", sa.Date(), nullable=False),
        sa.Column("end_month", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("province", sa.String(length=6), nullable=False),
        sa.Column("employer_credit_code", sa.String(length=18), nullable=True),
        sa.Column("carried_in_by", sa.String(length=60), nullable=True),
        sa.Column("carried_out_by", sa.String(length=60), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contribution_period")),
    )
    with op.batch_alter_table("contribution_period", schema=None) as batch_op:
        batch_op.create_index("ix_contribution_period_person", ["resident_id", "start_month"], unique=False)

    op.create_table(
        "insured_person",
        sa.Column("resident_id", sa.String(length=18), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("hukou_division", sa.String(length=6), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("employer_credit_code", sa.String(length=18), nullable=True),
        sa.Column("months_used", sa.Integer(), nullable=False),
        sa.Column("benefit_months_paid", sa.Integer(), nullable=False),
        sa.Column("transfer_lock", sa.String(length=60), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("resident_id", name=op.f("pk_insured_person")),
    )
    op.create_table(
        "settlement",
        sa.Column("id", sa.String(length=60), nullable=False),
        sa.Column("transfer_id", sa.String(length=60), nullable=False),
        sa.Column("peer_case", sa.String(length=60), nullable=False),
        sa.Column("resident_id", sa.String(length=18), nullable=False),
        sa.Column("to_province", sa.String(length=6), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("due_month", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement")),
        sa.UniqueConstraint("transfer_id", name=op.f("uq_settlement_transfer_id")),
    )
    with op.batch_alter_table("settlement", schema=None) as batch_op:
        batch_op.create_index("ix_settlement_status", ["status", "due_month"], unique=False)

    op.create_table(
        "transfer",
        sa.Column("id", sa.String(length=60), nullable=False),
        sa.Column("side", sa.String(length=10), nullable=False),
        sa.Column("peer_case", sa.String(length=60), nullable=True),
        sa.Column("resident_id", sa.String(length=18), nullable=False),
        sa.Column("person_name", sa.String(length=100), nullable=False),
        sa.Column("from_province", sa.String(length=6), nullable=False),
        sa.Column("to_province", sa.String(length=6), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("new_employer_credit_code", sa.String(length=18), nullable=True),
        sa.Column("state", sa.String(length=30), nullable=False),
        sa.Column("filed_by", sa.String(length=200), nullable=False),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answer_due", sa.Date(), nullable=False),
        sa.Column("complete_due", sa.Date(), nullable=False),
        sa.Column("sheet", sa.JSON(), nullable=True),
        sa.Column("entitlement", sa.JSON(), nullable=True),
        sa.Column("refusal_reason", sa.Text(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfer")),
    )
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.create_index("ix_transfer_person", ["resident_id"], unique=False)
        batch_op.create_index("ix_transfer_state", ["side", "state"], unique=False)
        batch_op.create_index(
            "uq_transfer_open_per_person",
            ["resident_id"],
            unique=True,
            sqlite_where=sa.text("state NOT IN ('completed', 'refused', 'cancelled')"),
            postgresql_where=sa.text("state NOT IN ('completed', 'refused', 'cancelled')"),
        )
        batch_op.create_index("uq_transfer_peer_case", ["side", "peer_case"], unique=True)

    op.create_table(
        "transfer_step",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("transfer_id", sa.String(length=60), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=30), nullable=False),
        sa.Column("province", sa.String(length=6), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfer_step")),
    )
    with op.batch_alter_table("transfer_step", schema=None) as batch_op:
        batch_op.create_index("ix_transfer_step_transfer", ["transfer_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("transfer_step", schema=None) as batch_op:
        batch_op.drop_index("ix_transfer_step_transfer")

    op.drop_table("transfer_step")
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.drop_index("uq_transfer_peer_case")
        batch_op.drop_index(
            "uq_transfer_open_per_person",
            sqlite_where=sa.text("state NOT IN ('completed', 'refused', 'cancelled')"),
            postgresql_where=sa.text("state NOT IN ('completed', 'refused', 'cancelled')"),
        )
        batch_op.drop_index("ix_transfer_state")
        batch_op.drop_index("ix_transfer_person")

    op.drop_table("transfer")
    with op.batch_alter_table("settlement", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_status")

    op.drop_table("settlement")
    op.drop_table("insured_person")
    with op.batch_alter_table("contribution_period", schema=None) as batch_op:
        batch_op.drop_index("ix_contribution_period_person")

    op.drop_table("contribution_period")
    op.drop_table("benefit_config")
