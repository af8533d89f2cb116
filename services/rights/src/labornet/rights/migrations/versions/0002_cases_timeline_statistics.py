"""Rights cases, their timeline, and the federation's anonymous statistics.

Revision ID: rights_0002
Revises: rights_0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "rights_0002"
down_revision: str | None = "rights_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "rights_case",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("home_province", sa.String(length=6), nullable=False),
        sa.Column("handling_province", sa.String(length=6), nullable=True),
        sa.Column("holder", sa.String(length=6), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("closure_reason", sa.String(length=30), nullable=True),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("sector", sa.String(length=20), nullable=False),
        sa.Column("complainant_resident_id", sa.String(length=18), nullable=False),
        sa.Column("complainant_name", sa.String(length=50), nullable=False),
        sa.Column("complainant_phone", sa.String(length=20), nullable=False),
        sa.Column("employer_name", sa.String(length=200), nullable=False),
        sa.Column("employer_credit_code", sa.String(length=18), nullable=False),
        sa.Column("employer_address", sa.String(length=300), nullable=False),
        sa.Column("employer_province", sa.String(length=6), nullable=False),
        sa.Column("work_division", sa.String(length=6), nullable=False),
        sa.Column("work_site", sa.String(length=200), nullable=True),
        sa.Column("work_place_name", sa.String(length=100), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("amount_owed_fen", sa.BigInteger(), nullable=False),
        sa.Column("workers_affected", sa.Integer(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("facts", sa.Text(), nullable=False),
        _time("filed_at"),
        _time("referred_at", nullable=True),
        sa.Column("acceptance_due", sa.Date(), nullable=True),
        _time("accepted_at", nullable=True),
        sa.Column("investigation_due", sa.Date(), nullable=True),
        sa.Column("extended", sa.Boolean(), nullable=False),
        _time("concluded_at", nullable=True),
        sa.Column("amount_recovered_fen", sa.BigInteger(), nullable=True),
        sa.Column("workers_paid", sa.Integer(), nullable=True),
        sa.Column("declined_by", sa.JSON(), nullable=False),
        sa.Column("redacted", sa.Boolean(), nullable=False),
        _time("withdrawal_requested_at", nullable=True),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rights_case")),
    )
    with op.batch_alter_table("rights_case", schema=None) as batch_op:
        batch_op.create_index("ix_rights_case_status", ["status", "id"], unique=False)
        batch_op.create_index("ix_rights_case_complainant", ["complainant_resident_id"], unique=False)
        batch_op.create_index("ix_rights_case_home", ["home_province", "status"], unique=False)
        batch_op.create_index("ix_rights_case_handling", ["handling_province", "status"], unique=False)

    op.create_table(
        "case_entry",
        sa.Column("case_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        _time("at"),
        sa.Column("province", sa.String(length=6), nullable=False),
        sa.Column("actor", sa.String(length=220), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "seq", name="pk_case_entry"),
    )

    op.create_table(
        "statistics_origin",
        sa.Column("origin", sa.String(length=6), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        _time("as_of"),
        sa.PrimaryKeyConstraint("origin", name=op.f("pk_statistics_origin")),
    )
    op.create_table(
        "statistics_cell",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("origin", sa.String(length=6), nullable=False),
        sa.Column("handling_province", sa.String(length=6), nullable=True),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("sector", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("cases", sa.Integer(), nullable=False),
        sa.Column("workers_affected", sa.BigInteger(), nullable=False),
        sa.Column("amount_owed_fen", sa.BigInteger(), nullable=False),
        sa.Column("amount_recovered_fen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_statistics_cell")),
    )
    with op.batch_alter_table("statistics_cell", schema=None) as batch_op:
        batch_op.create_index("ix_statistics_cell_origin", ["origin"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("statistics_cell", schema=None) as batch_op:
        batch_op.drop_index("ix_statistics_cell_origin")
    op.drop_table("statistics_cell")
    op.drop_table("statistics_origin")
    op.drop_table("case_entry")
    with op.batch_alter_table("rights_case", schema=None) as batch_op:
        batch_op.drop_index("ix_rights_case_handling")
        batch_op.drop_index("ix_rights_case_home")
        batch_op.drop_index("ix_rights_case_complainant")
        batch_op.drop_index("ix_rights_case_status")
    op.drop_table("rights_case")
