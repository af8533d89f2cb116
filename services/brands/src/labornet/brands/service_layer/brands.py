"""Use cases of the brand lifecycle, each one unit of work: state change and event commit together.

The origin node registers, changes, recognises and revokes its brands and writes the event into the outbox in the
same transaction. Partners apply the events to their replica through :meth:`BrandService.apply_event`, which
holds them to the same rules first: a newer version replaces an older one, an older or equal one changes nothing.
Reads attach the outcome of the name-conflict rule (:mod:`labornet.brands.domain.names`) computed from the brands
the node holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.brands.adapters.search import claims_sharing, plain
from labornet.brands.adapters.tables import brand, brand_name_claim
from labornet.brands.domain import text
from labornet.brands.domain.brand import (
    RECOGNISED,
    RECORD_FIELDS,
    REGISTERED,
    REVOKED,
    UPDATED,
    BrandChanges,
    BrandDraft,
    BrandRecord,
    BrandRuleError,
    NameTaken,
    Status,
    categories,
    check_recognise,
    check_replicated,
    check_revoke,
    check_update,
    flatten,
    new_brand_id,
    normalise_name,
    now,
)
from labornet.brands.domain.names import resolve_names
from labornet.brands.domain.places import InvalidPlace, division_in, members
from labornet.shared.db import insert_of, update_of, update_parameters
from labornet.shared.divisions import DivisionRegistry
from labornet.shared.envelope import Envelope, format_time
from labornet.shared.inbox import RuleViolation, check_version_continuity, describe
from labornet.shared.observability import set_counts
from labornet.shared.outbox import Outbox
from labornet.shared.problems import Forbidden, NotFound, Unprocessable
from labornet.shared.provinces import ProvinceRegistry
from labornet.shared.replica import check_owner, upsert_newer
from labornet.shared.topics import events_topic

BRANDS = Gauge("labornet_brands_brands", "Brands held by this node, by state", ["origin_province", "state"])
REPLICA_CHANGES = Counter(
    "labornet_brands_replica_changes_total", "Partner brand events applied to the replica, by result", ["result"]
)


def search_tokens(row: Mapping[str, Any]) -> str:
    return text.document(
        [
            row["name_zh"],
            row["name_en"] or "",
            row["description"],
            row["category_name"],
            row["division_name"],
            row["cultivating_body_name"],
            " ".join(row["skills"]),
            " ".join(base["name"] for base in row["training_bases"]),
        ]
    )


def to_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """The brand as events carry it (JSON types; every stored time is UTC)."""
    data: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        value = row[name]
        data[name] = format_time(value) if isinstance(value, datetime) else value
    return data


def from_event(data: Mapping[str, Any]) -> dict[str, Any]:
    """A brand row from an event's data; raises ``ValueError`` (pydantic's ValidationError) naming what is wrong."""
    record = BrandRecord.model_validate(data)
    row = record.model_dump(mode="python")
    row["status"], row["level"] = record.status.value, record.level.value
    row["cultivating_body_type"] = record.cultivating_body_type.value
    row["normalised_name"] = normalise_name(record.name_zh)
    row["search_tokens"] = search_tokens(row)
    return row


async def present(
    session: AsyncSession, rows: Iterable[Mapping[str, Any]], registry: ProvinceRegistry
) -> list[dict[str, Any]]:
    """Brands as the API shows them: the record plus how the name-conflict rule displays each."""
    rows = list(rows)
    claims = await claims_sharing(session, (row["normalised_name"] for row in rows))
    resolved = resolve_names(claims, {province.code: province for province in registry})
    shown = []
    for row in rows:
        resolution = resolved[row["id"]]
        shown.append(
            {
                **to_event(row),
                "display_name": resolution.display_name,
                "display_name_en": resolution.display_name_en,
                "name_conflict": resolution.name_conflict,
                "name_conflict_with": list(resolution.name_conflict_with),
            }
        )
    return shown


def _unprocessable(exc: InvalidPlace) -> Unprocessable:
    return Unprocessable(str(exc), errors=[{"field": exc.field, "message": str(exc)}])


class BrandService:
    def __init__(
        self,
        *,
        province: str,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        divisions: DivisionRegistry,
        registry: ProvinceRegistry,
        max_version_jump: int = 0,
    ) -> None:
        self.province = province
        self.sessions = sessions
        self.outbox = outbox
        self.divisions = divisions
        self.registry = registry
        self.max_version_jump = max_version_jump  # LABORNET_REPLICA_MAX_VERSION_JUMP; 0 = no limit
        self.topic = events_topic(province, "brands")

    def _places(self, row: dict[str, Any], given: Mapping[str, Any]) -> None:
        """Check the places a request names against configuration and fill in their names."""
        try:
            if "division_code" in given:
                row["division_name"] = division_in(self.divisions, self.province, given["division_code"]).name
            if "destination_regions" in given:
                members(self.registry, given["destination_regions"], "destination_regions")
        except InvalidPlace as exc:
            raise _unprocessable(exc) from exc

    async def register(self, draft: BrandDraft) -> dict[str, Any]:
        """Register a brand of this province as proposed."""
        row = flatten(draft)
        self._places(row, row)
        moment = now()
        row.update(
            id=new_brand_id(self.province),
            origin_province=self.province,
            normalised_name=normalise_name(draft.name_zh),
            category_name=categories()[draft.category].zh,
            status=Status.PROPOSED.value,
            registered_at=moment,
            recognised_at=None,
            revoked_at=None,
            revocation_reason=None,
            updated_at=moment,
            version=1,
        )
        row["search_tokens"] = search_tokens(row)
        async with self.sessions() as session, session.begin():
            await self._claim_name(session, row)
            await session.execute(insert_of(brand), row)
            await self._emit(session, REGISTERED, row)
        return row

    async def update(self, brand_id: str, changes: BrandChanges, if_match: int | None) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            current = await self._own(session, brand_id)
            check_update(current, changes, changes.version or if_match)
            given = flatten(changes)
            row = {**current, **given}
            self._places(row, given)
            if changes.category is not None:
                row["category_name"] = categories()[changes.category].zh
            if changes.name_zh is not None:
                row["normalised_name"] = normalise_name(changes.name_zh)
                if row["normalised_name"] != current["normalised_name"]:
                    await self._release_name(session, brand_id)
                    await self._claim_name(session, row)
            row.update(version=current["version"] + 1, updated_at=now())
            row["search_tokens"] = search_tokens(row)
            await self._save(session, current, row)
            await self._emit(session, UPDATED, row)
        return row

    async def recognise(self, brand_id: str, expected_version: int | None) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            current = await self._own(session, brand_id)
            check_recognise(current, expected_version)
            moment = now()
            row = {
                **current,
                "status": Status.RECOGNISED.value,
                "recognised_at": moment,
                "updated_at": moment,
                "version": current["version"] + 1,
            }
            await self._save(session, current, row)
            await self._emit(session, RECOGNISED, row)
        return row

    async def revoke(self, brand_id: str, reason: str, expected_version: int | None) -> dict[str, Any]:
        """Revoke a recognised brand, or withdraw a proposal; its name becomes free in the province."""
        async with self.sessions() as session, session.begin():
            current = await self._own(session, brand_id)
            check_revoke(current, expected_version)
            moment = now()
            row = {
                **current,
                "status": Status.REVOKED.value,
                "revoked_at": moment,
                "revocation_reason": reason,
                "updated_at": moment,
                "version": current["version"] + 1,
            }
            await self._save(session, current, row)
            await self._release_name(session, brand_id)
            await self._emit(session, REVOKED, row)
        return row

    async def _own(self, session: AsyncSession, brand_id: str) -> dict[str, Any]:
        found = (await session.execute(select(brand).where(brand.c.id == brand_id))).mappings().one_or_none()
        if found is None:
            raise NotFound(f"no brand {brand_id}")
        if found["origin_province"] != self.province:
            raise Forbidden(
                f"brand {brand_id} belongs to province {found['origin_province']}; only its officers change it"
            )
        return plain(found)

    async def _claim_name(self, session: AsyncSession, row: Mapping[str, Any]) -> None:
        """Enter the brand's name in the province's register; :class:`NameTaken` if another brand holds it."""
        holder = (
            await session.execute(
                select(brand.c.id, brand.c.name_zh, brand.c.status)
                .join(brand_name_claim, brand_name_claim.c.brand_id == brand.c.id)
                .where(brand_name_claim.c.normalised_name == row["normalised_name"])
            )
        ).one_or_none()
        if holder is not None:
            raise NameTaken(
                f"the name {row['name_zh']} is already used in province {self.province} by brand {holder.id} "
                f"({holder.name_zh}, {holder.status})"
            )
        try:
            await session.execute(
                insert(brand_name_claim).values(normalised_name=row["normalised_name"], brand_id=row["id"])
            )
        except IntegrityError as exc:  # a concurrent request took it between the check and the insert
            raise NameTaken(f"the name {row['name_zh']} was just taken by another brand of {self.province}") from exc

    async def _release_name(self, session: AsyncSession, brand_id: str) -> None:
        await session.execute(delete(brand_name_claim).where(brand_name_claim.c.brand_id == brand_id))

    async def _save(self, session: AsyncSession, current: Mapping[str, Any], row: Mapping[str, Any]) -> None:
        result = await session.execute(
            update_of(brand, "id", "version"),
            update_parameters(
                {k: v for k, v in row.items() if k != "id"}, id=current["id"], version=current["version"]
            ),
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise BrandRuleError(f"brand {current['id']} changed concurrently; reload and retry")

    async def _emit(self, session: AsyncSession, event_type: str, row: Mapping[str, Any]) -> None:
        await self.outbox.add(
            session, topic=self.topic, event_type=event_type, key=row["id"], subject=row["id"], data=to_event(row)
        )

    async def apply_event(self, session: AsyncSession, envelope: Envelope) -> None:
        """Apply a partner's brand event to the replica: newer versions win, older or equal ones change nothing.

        The event is first held to the rules the origin's API enforces (:class:`BrandRecord`, the division and
        province registries, the brand's life against the held copy: :func:`check_replicated`) and to version
        continuity (:func:`~labornet.shared.inbox.check_version_continuity`); one that breaks any is a
        :class:`RuleViolation`, quarantined at once."""
        try:
            row = from_event(envelope.json())
            check_owner(row, envelope, "origin_province", "brand")
            division_in(self.divisions, row["origin_province"], row["division_code"])
            members(self.registry, row["destination_regions"], "destination_regions")
            found = await session.execute(
                select(brand.c.version, brand.c.status, brand.c.name_zh).where(brand.c.id == row["id"])
            )
            held = found.mappings().one_or_none()
            check_replicated(envelope.type, row, dict(held) if held else None)
        except ValueError as exc:  # pydantic's ValidationError, BrandRuleError, InvalidPlace, bad JSON
            raise RuleViolation(f"brand event {envelope.id} breaks the brand rules: {describe(exc)}") from exc
        check_version_continuity(envelope, row["version"], held["version"] if held else None, self.max_version_jump)
        await apply_replica_row(session, row)


async def apply_replica_row(session: AsyncSession, row: dict[str, Any]) -> str:
    """Insert or update a partner's brand if ``row`` is newer than the replica's copy; say what happened."""
    result = await upsert_newer(session, brand, row)
    REPLICA_CHANGES.labels(result).inc()
    return result


async def refresh_gauges(session: AsyncSession) -> None:
    """Set the brands gauge from the table; every status of every province seen, zeros included."""
    rows = (
        await session.execute(
            select(brand.c.origin_province, brand.c.status, func.count()).group_by(
                brand.c.origin_province, brand.c.status
            )
        )
    ).all()
    counts = {(province, status): count for province, status, count in rows}
    set_counts(
        BRANDS,
        {
            (province, status.value): counts.get((province, status.value), 0)
            for province, _ in counts
            for status in Status
        },
    )
