"""Earlier unclaimed entitlement on the record, the record's name on a sending case, settlements on both sides.

Revision ID: insurance_0004
Revises: insurance_0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "insurance_0004"
down_revision: str | None = "insurance_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("insured_person", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("earlier_unclaimed_months", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_on_record", sa.String(length=100), nullable=True))
    with op.batch_alter_table("settlement", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("direction", sa.String(length=10), server_default=sa.text("'outgoing'"), nullable=False)
        )
        batch_op.add_column(sa.Column("from_province", sa.String(length=6), nullable=True))
        batch_op.add_column(sa.Column("payment_reference", sa.String(length=100), nullable=True))
        batch_op.create_index("ix_settlement_direction", ["direction", "status"], unique=False)
    # every settlement written before this revision was this node's own, owed for one of its sending cases
    op.execute(
        "UPDATE settlement SET from_province = "
        "(SELECT transfer.from_province FROM transfer WHERE transfer.id = settlement.transfer_id)"
    )


def downgrade() -> None:
    op.execute("DELETE FROM settlement WHERE direction = 'incoming'")
    with op.batch_alter_table("settlement", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_direction")
        batch_op.drop_column("payment_reference")
        batch_op.drop_column("from_province")
        batch_op.drop_column("direction")
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.drop_column("name_on_record")
    with op.batch_alter_table("insured_person", schema=None) as batch_op:
        batch_op.drop_column("earlier_unclaimed_months")
