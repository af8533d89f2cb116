"""The insurance service's tables: insured persons and their contribution history, benefit configuration,
transfer cases (both the receiving and the sending side, one row per side per node), their timelines, and fund
settlements."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    text,
)

from labornet.shared.db import NAMING_CONVENTION, Id

metadata = MetaData(naming_convention=NAMING_CONVENTION)

TERMINAL_STATES = ("completed", "refused", "cancelled")

insured_person = Table(
    "insured_person",
    metadata,
    Column("resident_id", String(18), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("hukou_division", String(6), nullable=False),
    Column("status", String(30), nullable=False),
    Column("employer_credit_code", String(18), nullable=True),
    Column("months_used", Integer, nullable=False),
    Column("benefit_months_paid", Integer, nullable=False),
    Column("earlier_unclaimed_months", Integer, nullable=False, server_default=text("0")),  # art. 17 §2
    Column("transfer_lock", String(60), nullable=True),  # the transfer case holding this person, if any
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

contribution_period = Table(
    "contribution_period",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("resident_id", String(18), nullable=False),
    Column("start_month", Date, nullable=False),
    Column("end_month", Date, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("province", String(6), nullable=False),  # where it was contributed
    Column("employer_credit_code", String(18), nullable=True),
    Column("carried_in_by", String(60), nullable=True),  # transfer case that brought it here
    Column("carried_out_by", String(60), nullable=True),  # transfer case that took it away
)
Index("ix_contribution_period_person", contribution_period.c.resident_id, contribution_period.c.start_month)

benefit_config = Table(
    "benefit_config",
    metadata,
    Column("province", String(6), primary_key=True),
    Column("monthly_standard", Numeric(10, 2), nullable=False),
    Column("minimum_wage", Numeric(10, 2), nullable=False),
    Column("subsistence_line", Numeric(10, 2), nullable=False),
    Column("answer_limit_days", Integer, nullable=False),
    Column("transfer_limit_days", Integer, nullable=False),
    Column("fund_multiplier", Numeric(4, 2), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

transfer = Table(
    "transfer",
    metadata,
    Column("id", String(60), primary_key=True),  # this side's case number
    Column("side", String(10), nullable=False),  # receiving | sending
    Column("peer_case", String(60), nullable=True),  # the other side's case number
    Column("resident_id", String(18), nullable=False),
    Column("person_name", String(100), nullable=False),
    Column("from_province", String(6), nullable=False),
    Column("to_province", String(6), nullable=False),
    Column("reason", String(40), nullable=False),
    Column("new_employer_credit_code", String(18), nullable=True),
    Column("state", String(30), nullable=False),
    Column("filed_by", String(200), nullable=False),
    Column("filed_at", DateTime(timezone=True), nullable=False),
    Column("answer_due", Date, nullable=False),
    Column("complete_due", Date, nullable=False),
    Column("sheet", JSON, nullable=True),
    Column("entitlement", JSON, nullable=True),
    Column("refusal_reason", Text, nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Column("version", Integer, nullable=False),
    Column("name_on_record", String(100), nullable=True),  # sending side: the record's name when it differs
)
Index("ix_transfer_person", transfer.c.resident_id)
Index("ix_transfer_state", transfer.c.side, transfer.c.state)
Index("uq_transfer_peer_case", transfer.c.side, transfer.c.peer_case, unique=True)
# at most one open transfer per person on each node (terminal states excluded)
Index(
    "uq_transfer_open_per_person",
    transfer.c.resident_id,
    unique=True,
    sqlite_where=text("state NOT IN ('completed', 'refused', 'cancelled')"),
    postgresql_where=text("state NOT IN ('completed', 'refused', 'cancelled')"),
)

transfer_step = Table(
    "transfer_step",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("transfer_id", String(60), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("state", String(30), nullable=False),
    Column("province", String(6), nullable=False),
    Column("note", Text, nullable=True),
)
Index("ix_transfer_step_transfer", transfer_step.c.transfer_id, transfer_step.c.id)

settlement = Table(
    "settlement",
    metadata,
    Column("id", String(60), primary_key=True),
    Column("transfer_id", String(60), nullable=False, unique=True),
    Column("peer_case", String(60), nullable=False),
    Column("resident_id", String(18), nullable=False),
    Column("to_province", String(6), nullable=False),
    Column("amount", Numeric(12, 2), nullable=False),
    Column("due_month", Date, nullable=False),
    Column("status", String(10), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("paid_at", DateTime(timezone=True), nullable=True),
    Column("paid_by", String(200), nullable=True),
    Column("direction", String(10), nullable=False, server_default=text("'outgoing'")),  # outgoing | incoming
    Column("from_province", String(6), nullable=True),  # the paying province (null: written before 0004, here)
    Column("payment_reference", String(100), nullable=True),
)
Index("ix_settlement_status", settlement.c.status, settlement.c.due_month)
Index("ix_settlement_direction", settlement.c.direction, settlement.c.status)
