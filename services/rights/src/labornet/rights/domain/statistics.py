"""Anonymous statistics of rights cases, published by every member on its broadcast rights stream.

Each province counts the cases filed with it (it is their home province, and the one province that always holds
them) by handling province, category, sector and status, with the workers affected and the amounts owed and
recovered. A snapshot replaces the previous one of the same origin; ``generation`` orders them. Snapshots carry
counts and sums only: no case number, no name, no identity number, no employer.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from labornet.rights.domain.case import Category, Sector, Status
from labornet.shared.bounds import NonNegativeInt64, PositiveInt32, PositiveInt64

STATISTICS_PUBLISHED = "org.labornet.rights.statistics.published.v1"


class Cell(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    handling_province: str | None = Field(pattern=r"^\d{2}0000$", description="null for cases returned home")
    category: Category
    sector: Sector
    status: Status
    cases: PositiveInt32
    workers_affected: NonNegativeInt64
    amount_owed: Decimal = Field(ge=0, decimal_places=2)
    amount_recovered: Decimal = Field(ge=0, decimal_places=2)


class StatisticsSnapshot(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    origin: str = Field(pattern=r"^\d{2}0000$", description="the home province whose cases are counted")
    generation: PositiveInt64 = Field(description="a newer snapshot of the same origin has a higher generation")
    as_of: datetime
    cells: list[Cell]
