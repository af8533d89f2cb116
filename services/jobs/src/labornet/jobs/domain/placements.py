"""Placements: workers of one province hired by employers of another, and the anonymous statistics of them.

A placement is one hire between two provinces, kept at both ends: the worker's home province (the *origin*) and the
vacancy's owner (the *destination*). Each province counts, from the placements it holds, its workers hired
elsewhere (*outbound*, by destination province) and the workers from elsewhere it hired (*inbound*, by origin
province), by month (the China date of the hire), occupation and target group, and broadcasts the counts as one
snapshot per month; a newer ``generation`` of one origin replaces the older one of the same month. A hire within one
province is no placement between provinces: it is kept (so the hire is recorded once) and counted in neither
direction.

Target groups: one cell counts the hires of one counterpart province, month and occupation (``hires``), and says
how many of them belong to each target group (``target_groups``). A hire with several groups counts in each of its
groups but once in ``hires``, so totals are sums of ``hires`` and never count a worker twice.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from labornet.jobs.domain.vacancy import OccupationCode, TargetGroup
from labornet.shared.bounds import PositiveInt32, PositiveInt64
from labornet.shared.clock import china_date

PLACEMENTS_PUBLISHED = "org.labornet.jobs.placements.published.v1"

PROVINCE_PATTERN = r"^\d{2}0000$"
MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
_APPLICATION_ID = re.compile(r"^(\d{2}0000)-A-[0-9A-F]{20}$")


class Direction(StrEnum):
    OUTBOUND = "outbound"  # workers of the origin hired in the counterpart province
    INBOUND = "inbound"  # workers of the counterpart province hired in the origin


def month_of(hired_at: datetime) -> str:
    """The month of a hire: ``YYYY-MM`` of its date in China (a hire at 16:30 UTC on 31 January is a February one)."""
    return china_date(hired_at).strftime("%Y-%m")


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("hired_at must carry a time zone (UTC)")
    return value


class Placement(BaseModel):
    """One hire between two provinces (or within one, counted in neither direction)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    application_id: str = Field(max_length=40)
    origin_province: str = Field(pattern=PROVINCE_PATTERN, description="the worker's home province")
    destination_province: str = Field(pattern=PROVINCE_PATTERN, description="the vacancy's owner")
    hired_at: Annotated[datetime, AfterValidator(_aware)]
    occupation_code: OccupationCode
    target_groups: tuple[TargetGroup, ...] = Field(max_length=10)

    @field_validator("target_groups")
    @classmethod
    def _distinct(cls, groups: tuple[TargetGroup, ...]) -> tuple[TargetGroup, ...]:
        return tuple(sorted(set(groups)))

    @model_validator(mode="after")
    def _application_of_origin(self) -> Self:
        found = _APPLICATION_ID.match(self.application_id)
        if found is None:
            raise ValueError(
                f"application id {self.application_id[:80]!r}: expected <home province>-A-<20 upper hex>, "
                "e.g. 510000-A-8F14E45FCEEA167A5A36"
            )
        if found.group(1) != self.origin_province:
            raise ValueError(
                f"application {self.application_id} was made at home province {found.group(1)}, "
                f"not at origin {self.origin_province}"
            )
        return self

    @property
    def month(self) -> str:
        return month_of(self.hired_at)

    @property
    def across_provinces(self) -> bool:
        return self.origin_province != self.destination_province


class Cell(BaseModel):
    """The hires of one counterpart province, month and occupation, seen from the snapshot's origin."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    direction: Direction
    counterpart_province: str = Field(
        pattern=PROVINCE_PATTERN, description="the destination of outbound hires, the origin of inbound ones"
    )
    month: str = Field(pattern=MONTH_PATTERN, description="YYYY-MM, the month of the hire in China's time zone")
    occupation_code: str = Field(pattern=r"^\d{1,4}$", description="ISCO-08 code of the vacancy's occupation")
    hires: PositiveInt32
    target_groups: dict[TargetGroup, PositiveInt32] = Field(
        default_factory=dict,
        description="of these hires, how many belong to each target group (a hire with several groups counts in "
        "each; hires of no group are in none)",
    )

    @model_validator(mode="after")
    def _groups_within_hires(self) -> Self:
        for group, count in self.target_groups.items():
            if count > self.hires:
                raise ValueError(f"target group {group.value}: {count} hires in a cell of {self.hires}")
        return self

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.direction.value, self.counterpart_province, self.month, self.occupation_code)


class PlacementSnapshot(BaseModel):
    """A province's placement statistics of one month: counts only, no application, no worker, no employer.

    A province publishes one snapshot per month that has placements, so that a snapshot stays small however many
    years of hires there are (at most two directions × the counterpart provinces × the occupations)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    origin: str = Field(pattern=PROVINCE_PATTERN, description="the province whose placements are counted")
    month: str = Field(pattern=MONTH_PATTERN, description="YYYY-MM in China's time zone: the month every cell counts")
    generation: PositiveInt64 = Field(
        description="orders the snapshots of one origin: a snapshot replaces the one held for its month if its "
        "generation is higher"
    )
    as_of: datetime
    cells: list[Cell] = Field(max_length=10_000)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        seen: set[tuple[str, str, str, str]] = set()
        for cell in self.cells:
            if cell.counterpart_province == self.origin:
                raise ValueError(f"a cell of {self.origin} names {self.origin} as its counterpart province")
            if cell.month != self.month:
                raise ValueError(f"a cell of month {cell.month} in the snapshot of {self.month}")
            if cell.key in seen:
                raise ValueError(f"two cells for {' '.join(cell.key)}")
            seen.add(cell.key)
        return self


def count_placements(province: str, placements: Iterable[Placement]) -> list[Cell]:
    """The cells of ``province``: its placements counted by direction, counterpart, month and occupation."""
    hires: Counter[tuple[str, str, str, str]] = Counter()
    groups: defaultdict[tuple[str, str, str, str], Counter[TargetGroup]] = defaultdict(Counter)
    for placement in placements:
        if not placement.across_provinces:
            continue
        if placement.origin_province == province:
            key = (Direction.OUTBOUND.value, placement.destination_province, placement.month, placement.occupation_code)
        elif placement.destination_province == province:
            key = (Direction.INBOUND.value, placement.origin_province, placement.month, placement.occupation_code)
        else:
            continue
        hires[key] += 1
        groups[key].update(placement.target_groups)
    return [
        Cell(
            direction=Direction(key[0]),
            counterpart_province=key[1],
            month=key[2],
            occupation_code=key[3],
            hires=hires[key],
            target_groups=dict(sorted(groups[key].items())),
        )
        for key in sorted(hires)
    ]


@dataclass(frozen=True)
class CellFilter:
    """Which cells a reader asks for; ``None`` is any."""

    counterpart_province: str | None = None
    month_from: str | None = None
    month_to: str | None = None
    occupation_code: str | None = None
    target_group: TargetGroup | None = None

    def hires(self, cell: Cell) -> int:
        """The hires of ``cell`` that pass the filter (those of the target group when one is asked for)."""
        if self.counterpart_province is not None and cell.counterpart_province != self.counterpart_province:
            return 0
        if self.month_from is not None and cell.month < self.month_from:
            return 0
        if self.month_to is not None and cell.month > self.month_to:
            return 0
        if self.occupation_code is not None and cell.occupation_code != self.occupation_code:
            return 0
        if self.target_group is not None:
            return cell.target_groups.get(self.target_group, 0)
        return cell.hires


@dataclass(frozen=True)
class Tally:
    """One direction's figures after a filter: the total and its breakdowns (each breakdown sums to the total, except
    the one by target group, where a hire counts in each of its groups)."""

    total: int
    by_counterpart: dict[str, int]
    by_month: dict[str, int]
    by_occupation: dict[str, int]
    by_target_group: dict[TargetGroup, int]
    cells: list[Cell]


def tally(cells: Iterable[Cell], direction: Direction, which: CellFilter) -> Tally:
    total = 0
    counterpart: Counter[str] = Counter()
    month: Counter[str] = Counter()
    occupation: Counter[str] = Counter()
    group: Counter[TargetGroup] = Counter()
    kept: list[Cell] = []
    for cell in cells:
        if cell.direction is not direction:
            continue
        hires = which.hires(cell)
        if hires == 0:
            continue
        kept.append(cell)
        total += hires
        counterpart[cell.counterpart_province] += hires
        month[cell.month] += hires
        occupation[cell.occupation_code] += hires
        for name, count in cell.target_groups.items():
            if which.target_group is None or name is which.target_group:
                group[name] += count
    return Tally(
        total=total,
        by_counterpart=dict(sorted(counterpart.items())),
        by_month=dict(sorted(month.items())),
        by_occupation=dict(sorted(occupation.items())),
        by_target_group=dict(sorted(group.items())),
        cells=sorted(kept, key=lambda c: c.key),
    )
