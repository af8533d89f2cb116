"""Demand for a brand's workers: use cases on both sides and the handlers of the directed messages.

The demanding node posts (state + directed message to the origin's inbox, one transaction); the origin node
records the demand on arrival and answers it (state + directed message back, one transaction); the demanding node
records the answer. Messages are applied by the platform inbox exactly once; each side also applies a message only
when it is newer than the demand it holds, so duplicates, replays and crossings change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.brands.adapters.tables import brand, demand
from labornet.brands.domain.brand import Status, now
from labornet.brands.domain.demand import (
    ANSWER_FIELDS,
    ANSWERED,
    AUTOMATIC,
    POSTED,
    RECORD_FIELDS,
    Decision,
    DemandAnswer,
    DemandRecord,
    DemandRequest,
    DemandRuleError,
    DemandStatus,
    check_answer,
    new_demand_id,
)
from labornet.brands.domain.places import InvalidPlace, division_in
from labornet.shared.db import as_utc
from labornet.shared.divisions import DivisionRegistry
from labornet.shared.envelope import Envelope, json_fields
from labornet.shared.inbox import Handler
from labornet.shared.outbox import Outbox
from labornet.shared.problems import Forbidden, NotFound, Unprocessable
from labornet.shared.topics import inbox_topic

log = logging.getLogger(__name__)

DEMANDS_POSTED = Counter(
    "labornet_brands_demands_posted_total",
    "Demands for a partner brand's workers posted by this province's officers, by the brand's province",
    ["origin_province"],
)
DEMANDS_RECEIVED = Counter(
    "labornet_brands_demands_received_total",
    "Demands for this province's brands received from partners, by demanding province",
    ["demanding_province"],
)
DEMANDS_ANSWERED = Counter(
    "labornet_brands_demands_answered_total",
    "Demands this province answered, by decision and by whom (officer or automatic)",
    ["decision", "by"],
)
TIME_COLUMNS = ("posted_at", "answered_at", "updated_at")


def plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A demand row with aware UTC times on both databases (SQLite gives them back naive)."""
    data = dict(row)
    for name in TIME_COLUMNS:
        if data.get(name) is not None:
            data[name] = as_utc(data[name])
    return data


def to_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The demand as messages carry it and the API shows it (JSON types)."""
    return json_fields(row, RECORD_FIELDS)


def from_record(data: Mapping[str, Any]) -> dict[str, Any]:
    record = DemandRecord.model_validate(data)
    row = record.model_dump(mode="python")
    row["status"] = record.status.value
    return row


class DemandService:
    def __init__(
        self,
        *,
        province: str,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        divisions: DivisionRegistry,
    ) -> None:
        self.province = province
        self.sessions = sessions
        self.outbox = outbox
        self.divisions = divisions

    # Demanding side ---------------------------------------------------------------------------------

    async def post(self, request: DemandRequest, officer: str) -> dict[str, Any]:
        """Record a demand for a partner's recognised brand and send it to the brand's province."""
        try:
            division = division_in(self.divisions, self.province, request.division_code)
        except InvalidPlace as exc:
            raise Unprocessable(str(exc), errors=[{"field": exc.field, "message": str(exc)}]) from exc
        async with self.sessions() as session, session.begin():
            wanted = (
                await session.execute(
                    select(brand.c.id, brand.c.name_zh, brand.c.origin_province, brand.c.status).where(
                        brand.c.id == request.brand_id
                    )
                )
            ).one_or_none()
            if wanted is None:
                message = f"no brand {request.brand_id} on this node"
                raise Unprocessable(message, errors=[{"field": "brand_id", "message": message}])
            if wanted.origin_province == self.province:
                message = f"brand {wanted.id} ({wanted.name_zh}) is this province's own; demands go to partners"
                raise Unprocessable(message, errors=[{"field": "brand_id", "message": message}])
            if wanted.status != Status.RECOGNISED:
                raise DemandRuleError(
                    f"brand {wanted.id} ({wanted.name_zh}) is {wanted.status}; demand workers of recognised brands"
                )
            moment = now()
            row: dict[str, Any] = {
                "id": new_demand_id(self.province),
                "brand_id": wanted.id,
                "brand_name_zh": wanted.name_zh,
                "origin_province": wanted.origin_province,
                "demanding_province": self.province,
                "workers": request.workers,
                "division_code": division.code,
                "city": request.city or division.name,
                "period_start": request.period_start,
                "period_end": request.period_end,
                "conditions": request.conditions,
                "contact": request.contact,
                "posted_by": officer,
                "posted_at": moment,
                "status": DemandStatus.OPEN.value,
                "workers_offered": None,
                "answer_note": None,
                "answered_by": None,
                "answered_at": None,
                "updated_at": moment,
                "version": 1,
            }
            await session.execute(insert(demand).values(**row))
            await self._send(session, row["origin_province"], POSTED, row)
        DEMANDS_POSTED.labels(row["origin_province"]).inc()
        return row

    async def on_answered(self, session: AsyncSession, envelope: Envelope) -> None:
        """The origin's answer to one of this province's demands: record it unless it is not newer."""
        answer = from_record(envelope.json())
        self._check_envelope(envelope, answer, sender=answer["origin_province"], receiver="demanding_province")
        held = (await session.execute(select(demand).where(demand.c.id == answer["id"]))).mappings().one_or_none()
        if held is None:
            raise ValueError(f"answer from {envelope.originprovince} to demand {answer['id']}, unknown here")
        if held["brand_id"] != answer["brand_id"] or held["origin_province"] != answer["origin_province"]:
            raise ValueError(
                f"answer to demand {answer['id']} names brand {answer['brand_id']}, not {held['brand_id']}"
            )
        if answer["version"] <= held["version"]:
            log.info("answer to demand %s at version %d is not newer; ignored", answer["id"], answer["version"])
            return
        await session.execute(
            update(demand).where(demand.c.id == answer["id"]).values(**{k: answer[k] for k in ANSWER_FIELDS})
        )

    # Origin side ------------------------------------------------------------------------------------

    async def on_posted(self, session: AsyncSession, envelope: Envelope) -> None:
        """A partner's demand for one of this province's brands: record it (declined at once if not recognised)."""
        row = from_record(envelope.json())
        self._check_envelope(envelope, row, sender=row["demanding_province"], receiver="origin_province")
        if row["version"] != 1 or row["status"] != DemandStatus.OPEN:
            raise ValueError(f"demand {row['id']} arrives as {row['status']} version {row['version']}, not open v1")
        if (await session.execute(select(demand.c.version).where(demand.c.id == row["id"]))).scalar() is not None:
            log.info("demand %s is already recorded; ignored", row["id"])
            return
        wanted = (
            await session.execute(select(brand.c.origin_province, brand.c.status).where(brand.c.id == row["brand_id"]))
        ).one_or_none()
        if wanted is None or wanted.origin_province != self.province:
            raise ValueError(f"demand {row['id']} names brand {row['brand_id']}, which is not a brand of this province")
        await session.execute(insert(demand).values(**row))
        DEMANDS_RECEIVED.labels(row["demanding_province"]).inc()
        if wanted.status != Status.RECOGNISED:
            reason = (
                f"brand {row['brand_id']} ({row['brand_name_zh']}) is {wanted.status} in province {self.province}; "
                "only recognised brands take demands"
            )
            await self._answer(session, row, DemandAnswer(decision=Decision.DECLINED, note=reason), AUTOMATIC)
            DEMANDS_ANSWERED.labels(Decision.DECLINED.value, "automatic").inc()

    async def answer(self, demand_id: str, answer: DemandAnswer, officer: str) -> dict[str, Any]:
        """Accept (with the number of workers the province can send) or decline (with a reason) a partner's demand."""
        async with self.sessions() as session, session.begin():
            found = (await session.execute(select(demand).where(demand.c.id == demand_id))).mappings().one_or_none()
            if found is None:
                raise NotFound(f"no demand {demand_id} on this node")
            current = plain(found)
            if current["origin_province"] != self.province:
                raise Forbidden(
                    f"demand {demand_id} was posted by this province; the brand's province "
                    f"{current['origin_province']} answers it"
                )
            check_answer(current, answer)
            row = await self._answer(session, current, answer, officer)
        DEMANDS_ANSWERED.labels(answer.decision.value, "officer").inc()
        return row

    async def _answer(
        self, session: AsyncSession, current: Mapping[str, Any], answer: DemandAnswer, by: str
    ) -> dict[str, Any]:
        moment = now()
        row = {
            **current,
            "status": answer.decision.value,
            "workers_offered": answer.workers_offered,
            "answer_note": answer.note,
            "answered_by": by,
            "answered_at": moment,
            "updated_at": moment,
            "version": current["version"] + 1,
        }
        result = await session.execute(
            update(demand)
            .where(demand.c.id == current["id"], demand.c.version == current["version"])
            .values(**{k: row[k] for k in ANSWER_FIELDS})
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise DemandRuleError(f"demand {current['id']} was answered concurrently; reload it")
        await self._send(session, row["demanding_province"], ANSWERED, row)
        return row

    # Internals --------------------------------------------------------------------------------------

    def _check_envelope(self, envelope: Envelope, row: Mapping[str, Any], *, sender: str, receiver: str) -> None:
        if envelope.originprovince != sender:
            raise ValueError(
                f"message from {envelope.originprovince} about demand {row['id']} should come from {sender}"
            )
        if row[receiver] != self.province:
            raise ValueError(f"demand {row['id']} concerns {row[receiver]} as {receiver}, not this province")
        if envelope.partitionkey != row["id"]:
            raise ValueError(f"message key {envelope.partitionkey} differs from demand id {row['id']}")

    async def _send(self, session: AsyncSession, to: str, event_type: str, row: Mapping[str, Any]) -> None:
        await self.outbox.add(
            session,
            topic=inbox_topic(to, "brands"),
            destination=to,
            event_type=event_type,
            key=row["id"],
            subject=row["id"],
            data=to_record(row),
        )

    def handlers(self) -> dict[str, Handler]:
        return {POSTED: self.on_posted, ANSWERED: self.on_answered}
