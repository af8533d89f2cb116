"""The same brand name in two provinces: how every node detects it and displays both brands, identically.

A name is unique within its origin province (a database constraint at the origin), but no rule can stop two
provinces from registering the same name at the same moment: each checks only its own brands, and the events
cross on the bus. So the clash is not prevented but resolved, by every node on its own, from the replicated brands
alone and without any coordination:

* Brands **share a name** when their :func:`~labornet.brands.domain.brand.normalise_name` forms are equal. The
  **holders** of a name are the brands sharing it that are not revoked (a revoked brand gives its name up).
* **The first claim keeps the plain name.** Among the holders, the one with the earliest ``name_claimed_at`` — the
  origin's clock when the brand was registered under that name, or renamed to it — is displayed as its plain name.
  Equal times go to the lower province code, then to the lower brand id: the order is total.
* Every other brand that shares the name with a holder **of another province** is displayed with its province's
  short name: ``川妹子（重庆）``, and in English ``Chuanmeizi (Chongqing)``.
* Every brand carries ``name_conflict_with``: the ids of the holders of another province that share its name,
  sorted; empty when there is no clash.

Everything the rule reads (name, origin province, id, status, ``name_claimed_at``) travels in every brand event, and
the outcome depends only on the set of brands a node holds, not on the order their events arrived in: once two
nodes hold the same versions they show the same names. The outcome is computed when brands are read, never
stored, so two transactions applying the two sides of a clash at the same moment cannot leave a stale decision.
Clock skew between origins can only change *which* brand is first, never make two nodes disagree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from labornet.shared.provinces import Province


@dataclass(frozen=True)
class NameClaim:
    """What the rule needs to know of one brand."""

    brand_id: str
    origin_province: str
    name_zh: str
    name_en: str | None
    normalised_name: str
    claimed_at: datetime
    revoked: bool

    def priority(self) -> tuple[datetime, str, str]:
        return self.claimed_at, self.origin_province, self.brand_id


@dataclass(frozen=True)
class NameResolution:
    display_name: str
    display_name_en: str | None
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
        holders = sorted((claim for claim in sharing if not claim.revoked), key=NameClaim.priority)
        first = holders[0].brand_id if holders else None
        for claim in sharing:
            rivals = tuple(sorted(h.brand_id for h in holders if h.origin_province != claim.origin_province))
            plain = claim.brand_id == first or not rivals
            resolved[claim.brand_id] = NameResolution(
                display_name=claim.name_zh if plain else _suffixed_zh(claim, provinces),
                display_name_en=claim.name_en if plain or claim.name_en is None else _suffixed_en(claim, provinces),
                name_conflict_with=rivals,
            )
    return resolved


def _suffixed_zh(claim: NameClaim, provinces: Mapping[str, Province]) -> str:
    province = provinces.get(claim.origin_province)
    return f"{claim.name_zh}（{province.short_zh if province else claim.origin_province}）"


def _suffixed_en(claim: NameClaim, provinces: Mapping[str, Province]) -> str:
    province = provinces.get(claim.origin_province)
    return f"{claim.name_en} ({province.en if province else claim.origin_province})"
