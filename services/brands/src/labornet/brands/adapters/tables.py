"""The brands service's tables (SQLAlchemy Core). One database per node's brands service.

* ``brand`` holds both the province's own brands and the replica of every partner's (``origin_province`` tells
  which); the origin is the only writer of a brand, and ``version`` orders its changes.
* ``brand_name_claim`` is the origin's register of the names its own brands use (one row per brand that is not
  revoked, keyed by the normalised name): what makes a name unique in its province, even under concurrent
  requests. Replicated brands never enter it; a partner's names are the business of the conflict rule
  (``labornet.brands.domain.names``).
* ``demand`` holds the demands this province posted for partners' brands and those partners posted for its
  brands; ``demanding_province`` and ``origin_province`` tell which side this node is on.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from labornet.shared.db import NAMING_CONVENTION

metadata = MetaData(naming_convention=NAMING_CONVENTION)

brand = Table(
    "brand",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("origin_province", String(6), nullable=False),
    Column("name_zh", String(50), nullable=False),
    Column("name_en", String(100), nullable=True),
    Column("normalised_name", String(50), nullable=False),  # domain.brand.normalise_name(name_zh)
    Column("division_code", String(6), nullable=False),
    Column("division_name", String(100), nullable=False),
    Column("category", String(40), nullable=False),
    Column("category_name", String(100), nullable=False),
    Column("level", String(20), nullable=False),
    Column("cultivating_body_type", String(20), nullable=False),
    Column("cultivating_body_name", String(200), nullable=False),
    Column("cultivating_body_credit_code", String(18), nullable=True),
    Column("description", Text, nullable=False),
    Column("skills", JSON, nullable=False),
    Column("training_bases", JSON, nullable=False),
    Column("destination_regions", JSON, nullable=False),
    Column("people_trained", Integer, nullable=False),
    Column("jobs_supported", Integer, nullable=False),
    Column("annual_labour_income_cny", BigInteger, nullable=False),
    Column("spokespersons", JSON, nullable=False),
    Column("trademark_number", String(20), nullable=True),
    Column("status", String(12), nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("recognised_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revocation_reason", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    # CJK bigrams and lower-cased Latin words of the searchable text, space separated and space padded
    Column("search_tokens", Text, nullable=False),
)
Index("ix_brand_status_registered", brand.c.status, brand.c.registered_at, brand.c.id)
Index("ix_brand_status_jobs", brand.c.status, brand.c.jobs_supported, brand.c.id)
Index("ix_brand_origin_status", brand.c.origin_province, brand.c.status)
Index("ix_brand_category_status", brand.c.category, brand.c.status)
Index("ix_brand_division_status", brand.c.division_code, brand.c.status)
Index("ix_brand_normalised_name", brand.c.normalised_name)

brand_name_claim = Table(
    "brand_name_claim",
    metadata,
    Column("normalised_name", String(50), primary_key=True),
    Column("brand_id", String(40), nullable=False, unique=True),
)

demand = Table(
    "demand",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("brand_id", String(40), nullable=False),
    Column("brand_name_zh", String(50), nullable=False),
    Column("origin_province", String(6), nullable=False),  # the brand's province, which answers
    Column("demanding_province", String(6), nullable=False),  # the province that wants the workers
    Column("workers", Integer, nullable=False),
    Column("division_code", String(6), nullable=False),
    Column("city", String(100), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("conditions", Text, nullable=False),
    Column("contact", String(200), nullable=False),
    Column("posted_by", String(200), nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False),
    Column("status", String(12), nullable=False),
    Column("workers_offered", Integer, nullable=True),
    Column("answer_note", Text, nullable=True),
    Column("answered_by", String(200), nullable=True),
    Column("answered_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
)
Index("ix_demand_posted", demand.c.posted_at, demand.c.id)
Index("ix_demand_brand", demand.c.brand_id)
Index("ix_demand_status", demand.c.status, demand.c.posted_at)
