"""The same brand name in two provinces: how every node detects the clash and resolves it, identically.

A name is unique within its origin province (a constraint at the origin), but nothing can stop two provinces from
registering and recognising the same name at the same moment: each checks only its own brands, and the events
cross on the bus. So the clash is not prevented but resolved, by every node on its own, from the replicated brands
alone and without any coordination:

* Brands **share a name** when their :func:`~labornet.brands.domain.brand.normalise_name` forms are equal.
* **The earliest recognition keeps the name.** Among the *recognised* brands sharing a name, they rank by
  ``recognised_at`` (the origin's clock when its officer recognised the brand), then by origin province code
  (lower first), then by brand id: the order is total. The Chinese name of a recognised brand never changes, so
  its rank never changes either.
* A recognised brand is **flagged** ``name_conflict`` when a recognised brand *of another province* ranks before
  it. It is displayed with its province's short name, ``川妹子（重庆）`` (in English ``Chuanmeizi (Chongqing)``).
  The brand ranked first keeps the plain name.
* Every brand that is not revoked carries ``name_conflict_with``: the ids of the other provinces' brands that share
  its name and are not revoked (proposals included), sorted. That is how a clash is *detected* as soon as both
  registrations are known, before either is recognised. Empty when there is no clash.
* A revoked brand gives its name up: it neither holds nor loses a name, and a brand it outranked is no longer
  flagged.

Everything the rule reads (name, origin province, id, status, ``recognised_at``) travels in every brand event, and
the outcome depends only on the set of brands a node holds, not on the order their events arrived in: once two
nodes hold the same versions they show the same flags. The outcome is computed when brands are read, never
stored, so two transactions applying the two sides of a clash at the same moment cannot leave a stale decision.
Clock skew between origins can only change *which* brand is first, never make two nodes disagree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from labornet.brands.domain.brand import Status
from labornet.shared.provinces import Province


@dataclass(frozen=True)
class NameClaim:
    """What the rule needs to know of one brand."""

    brand_id: str
    origin_province: str
    name_zh: str
    name_en: str | None
    normalised_name: str
    status: Status
    recognised_at: datetime | None

    def rank(self) -> tuple[datetime, str, str]:
        assert self.recognised_at is not None, "only recognised brands rank"
        return self.recognised_at, self.origin_province, self.brand_id


@dataclass(frozen=True)
class NameResolution:
    display_name: str
    display_name_en: str | None
    name_conflict: bool
    name_conflict_with: tuple[str, ...]


def resolve_names(claims: Iterable[NameClaim], provinces: Mapping[str, Province]) -> dict[str, NameResolution]:
    """How each brand of ``claims`` is displayed, by brand id.

    ``claims`` must hold, for every name it touches, every brand of the node sharing that name (any status); the
    result for a brand is only as good as the set it was decided from.
    """
    by_name: dict[str, list[NameClaim]] = defaultdict(list)
    for claim in claims:
        by_name[claim.normalised_name].append(claim)
    resolved: dict[str, NameResolution] = {}
    for sharing in by_name.values():
        recognised = sorted((c for c in sharing if c.status == Status.RECOGNISED), key=NameClaim.rank)
        active = [c for c in sharing if c.status != Status.REVOKED]
        for claim in sharing:
            if claim.status == Status.REVOKED:
                resolved[claim.brand_id] = NameResolution(claim.name_zh, claim.name_en, False, ())
                continue
            rivals = tuple(sorted(c.brand_id for c in active if c.origin_province != claim.origin_province))
            loses = claim.status == Status.RECOGNISED and any(
                holder.origin_province != claim.origin_province and holder.rank() < claim.rank()
                for holder in recognised
            )
            resolved[claim.brand_id] = NameResolution(
                display_name=_suffixed_zh(claim, provinces) if loses else claim.name_zh,
                display_name_en=_suffixed_en(claim, provinces) if loses and claim.name_en else claim.name_en,
                name_conflict=loses,
                name_conflict_with=rivals,
            )
    return resolved


def _suffixed_zh(claim: NameClaim, provinces: Mapping[str, Province]) -> str:
    province = provinces.get(claim.origin_province)
    return f"{claim.name_zh}（{province.short_zh if province else claim.origin_province}）"


def _suffixed_en(claim: NameClaim, provinces: Mapping[str, Province]) -> str:
    province = provinces.get(claim.origin_province)
    return f"{claim.name_en} ({province.en if province else claim.origin_province})"
