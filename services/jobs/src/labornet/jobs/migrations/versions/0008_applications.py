"""Applications across provinces: the application, its timeline, and the vacancy's hired count.

Revision ID: jobs_0008
Revises: jobs_0007
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "jobs_0008"
down_revision: str | None = "jobs_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a plain ADD/DROP COLUMN (SQLite 3.35+ drops one too): a batch copy of the table would lose the triggers
    # that keep the SQLite search index (jobs_0003)
    op.add_column("vacancy", sa.Column("hired", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "job_application",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("home_province", sa.String(length=6), nullable=False),
        sa.Column("owner_province", sa.String(length=6), nullable=False),
        sa.Column("vacancy_id", sa.String(length=40), nullable=False),
        sa.Column("vacancy_title", sa.String(length=200), nullable=False),
        sa.Column("employer_name", sa.String(length=200), nullable=False),
        sa.Column("occupation_code", sa.String(length=10), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("open_for", sa.String(length=40), nullable=True),
        sa.Column("applicant_name", sa.String(length=50), nullable=False),
        sa.Column("applicant_phone", sa.String(length=20), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("certificates", sa.JSON(), nullable=False),
        sa.Column("experience_years", sa.Integer(), nullable=False),
        sa.Column("expected_salary", sa.Integer(), nullable=True),
        sa.Column("available_from", sa.Date(), nullable=False),
        sa.Column("target_groups", sa.JSON(), nullable=False),
        sa.Column("cover_note", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interview_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("interview_place", sa.String(length=200), nullable=True),
        sa.Column("offer_salary", sa.Integer(), nullable=True),
        sa.Column("offer_start_date", sa.Date(), nullable=True),
        sa.Column("hired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("withdrawal_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_application")),
        sa.UniqueConstraint("worker", "open_for", name="uq_job_application_worker_open_for"),
    )
    op.create_index("ix_job_application_worker", "job_application", ["worker", "submitted_at"], unique=False)
    op.create_index("ix_job_application_owner_state", "job_application", ["owner_province", "state"], unique=False)
    op.create_index("ix_job_application_home_state", "job_application", ["home_province", "state"], unique=False)
    op.create_index("ix_job_application_vacancy", "job_application", ["vacancy_id"], unique=False)
    op.create_table(
        "application_entry",
        sa.Column("application_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("province", sa.String(length=6), nullable=False),
        sa.Column("actor", sa.String(length=220), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("application_id", "seq", name=op.f("pk_application_entry")),
    )
    op.create_table(
        "application_notice",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("application_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("vacancy_id", sa.String(length=40), nullable=False),
        sa.Column("vacancy_title", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_application_notice")),
    )
    op.create_index("ix_application_notice_worker", "application_notice", ["worker", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_application_notice_worker", table_name="application_notice")
    op.drop_table("application_notice")
    op.drop_table("application_entry")
    op.drop_index("ix_job_application_vacancy", table_name="job_application")
    op.drop_index("ix_job_application_home_state", table_name="job_application")
    op.drop_index("ix_job_application_owner_state", table_name="job_application")
    op.drop_index("ix_job_application_worker", table_name="job_application")
    op.drop_table("job_application")
    op.drop_column("vacancy", "hired")
