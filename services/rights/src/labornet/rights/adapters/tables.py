"""The rights service's tables (SQLAlchemy Core). One database per node's rights service.

``rights_case`` holds the cases this node is home or handling province of (and, masked, those it declined), one
row per case with the same ``id`` and ``version`` on both nodes; ``case_entry`` is their timeline. Amounts are
stored in fen (integer hundredths of a yuan), so sums are exact on every database.

``statistics_origin`` and ``statistics_cell`` hold the anonymous statistics of every member province (the latest
snapshot each published, including this node's own): counts and sums only, never a person.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from labornet.shared.db import NAMING_CONVENTION, Id

metadata = MetaData(naming_convention=NAMING_CONVENTION)

rights_case = Table(
    "rights_case",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("home_province", String(6), nullable=False),
    Column("handling_province", String(6), nullable=True),
    Column("holder", String(6), nullable=False),
    Column("status", String(20), nullable=False),
    Column("closure_reason", String(30), nullable=True),
    Column("category", String(40), nullable=False),
    Column("sector", String(20), nullable=False),
    Column("complainant_resident_id", String(18), nullable=False),
    Column("complainant_name", String(50), nullable=False),
    Column("complainant_phone", String(20), nullable=False),
    Column("employer_name", String(200), nullable=False),
    Column("employer_credit_code", String(18), nullable=False),
    Column("employer_address", String(300), nullable=False),
    Column("employer_province", String(6), nullable=False),
    Column("work_division", String(6), nullable=False),
    Column("work_site", String(200), nullable=True),
    Column("work_place_name", String(100), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("amount_owed_fen", BigInteger, nullable=False),
    Column("workers_affected", Integer, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("facts", Text, nullable=False),
    Column("filed_at", DateTime(timezone=True), nullable=False),
    Column("referred_at", DateTime(timezone=True), nullable=True),
    Column("acceptance_due", Date, nullable=True),
    Column("accepted_at", DateTime(timezone=True), nullable=True),
    Column("investigation_due", Date, nullable=True),
    Column("extended", Boolean, nullable=False),
    Column("concluded_at", DateTime(timezone=True), nullable=True),
    Column("amount_recovered_fen", BigInteger, nullable=True),
    Column("workers_paid", Integer, nullable=True),
    Column("declined_by", JSON, nullable=False),
    # this node's own bookkeeping, never sent
    Column("redacted", Boolean, nullable=False),  # a case this node declined: personal data masked
    Column("withdrawal_requested_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_rights_case_status", rights_case.c.status, rights_case.c.id)
Index("ix_rights_case_complainant", rights_case.c.complainant_resident_id)
Index("ix_rights_case_home", rights_case.c.home_province, rights_case.c.status)
Index("ix_rights_case_handling", rights_case.c.handling_province, rights_case.c.status)

case_entry = Table(
    "case_entry",
    metadata,
    Column("case_id", String(40), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("province", String(6), nullable=False),
    Column("actor", String(220), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("note", Text, nullable=True),
    Column("details", JSON, nullable=False),
    PrimaryKeyConstraint("case_id", "seq", name="pk_case_entry"),
)

statistics_origin = Table(
    "statistics_origin",
    metadata,
    Column("origin", String(6), primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
)

statistics_cell = Table(
    "statistics_cell",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("origin", String(6), nullable=False),  # the home province whose cases are counted
    Column("handling_province", String(6), nullable=True),
    Column("category", String(40), nullable=False),
    Column("sector", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("cases", Integer, nullable=False),
    Column("workers_affected", BigInteger, nullable=False),
    Column("amount_owed_fen", BigInteger, nullable=False),
    Column("amount_recovered_fen", BigInteger, nullable=False),
)
Index("ix_statistics_cell_origin", statistics_cell.c.origin)
