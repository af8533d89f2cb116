"""Anti-entropy between nodes: an origin serves a signed snapshot of what it owns; a node heals its replica.

Events are the normal path. When a replica may be missing data — a node joining late, a broker that lost its
log, gaps reported by ``/admin/v1/sync`` — an operator asks the origin for its snapshot. Each page is signed with
the origin's node key (Ed25519 over province, request and body), so the healing node verifies it against the
federation trust list exactly like events; rows are applied with the service's own newest-version-wins rule.

A service describes its replicated table with a :class:`ReplicaSpec` and mounts :func:`replica_router`:
``GET /api/v1/federation/<noun>/snapshot`` (public, signed) and ``POST /admin/v1/replica/heal`` (admin).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.shared.app import RuntimeDep
from labornet.shared.auth import Principal, Role, require_province_role
from labornet.shared.envelope import Envelope
from labornet.shared.problems import Problem, Unprocessable
from labornet.shared.signing import SignatureRejected

KEY_HEADER, SIGNATURE_HEADER = "X-LaborNet-Key-Id", "X-LaborNet-Signature"
PAGE_SIZE = 200


@dataclass(frozen=True)
class ReplicaSpec:
    service: str  # the service name, for the origin's address (``Settings.peer_url``)
    noun: str  # plural, for the path and messages: "vacancies", "brands"
    table: Table
    owner: Column[Any]  # the column holding the owning province
    to_event: Callable[[dict[str, Any]], dict[str, Any]]  # a row as the wire record
    from_event: Callable[[Mapping[str, Any]], dict[str, Any]]  # the wire record as a row; ValidationError if invalid
    apply_row: Callable[[AsyncSession, dict[str, Any]], Awaitable[str]]  # "inserted" | "updated" | "stale"
    row: Callable[[Any], dict[str, Any]] = dict  # a result row as a plain dict

    @property
    def snapshot_path(self) -> str:
        return f"/api/v1/federation/{self.noun}/snapshot"


def check_owner(row: Mapping[str, Any], envelope: Envelope, owner_key: str, noun: str) -> None:
    """A replicated record comes from its owner, under its own key; ``ValueError`` (quarantine) otherwise."""
    if row[owner_key] != envelope.originprovince:
        raise ValueError(f"event from {envelope.originprovince} carries {noun} {row['id']} of {row[owner_key]}")
    if row["id"] != envelope.partitionkey:
        raise ValueError(f"event key {envelope.partitionkey} differs from {noun} id {row['id']}")


async def upsert_newer(session: AsyncSession, table: Table, row: Mapping[str, Any]) -> str:
    """Insert ``row``, or update the held copy if ``row`` has a higher ``version``: "inserted", "updated" or "stale".

    Versions order the changes of one record, so an old event arriving late never overwrites a newer one and a
    replayed event changes nothing."""
    held = (await session.execute(select(table.c.version).where(table.c.id == row["id"]))).scalar()
    if held is None:
        await session.execute(insert(table).values(**row))
        return "inserted"
    if row["version"] > held:
        await session.execute(
            update(table).where(table.c.id == row["id"]).values(**{k: v for k, v in row.items() if k != "id"})
        )
        return "updated"
    return "stale"


class HealRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    origin: str = Field(pattern=r"^\d{2}0000$", description="the partner province whose records to fetch")
    base_url: str | None = Field(None, description="the origin's service; default from the federation file")
    updated_since: datetime | None = None


def replica_router(spec: ReplicaSpec) -> APIRouter:
    router = APIRouter()
    owner_key = spec.owner.key

    @router.get(spec.snapshot_path, tags=["federation"])
    async def snapshot(
        runtime: RuntimeDep,
        request: Request,
        after: Annotated[
            str | None, Query(max_length=40, description="cursor: the last id of the previous page")
        ] = None,
        updated_since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
    ) -> Response:
        """This province's own records in every state (so closures reach a healing replica), signed per page."""
        province = runtime.settings.province
        id_column = spec.table.c.id
        query = select(spec.table).where(spec.owner == province).order_by(id_column).limit(limit + 1)
        if after:
            query = query.where(id_column > after)
        if updated_since is not None:
            query = query.where(spec.table.c.updated_at >= updated_since)
        async with runtime.read_sessions() as session:
            rows = (await session.execute(query)).mappings().all()
        items = [spec.to_event(spec.row(row)) for row in rows[:limit]]
        document = {"origin": province, "items": items, "next_after": items[-1]["id"] if len(rows) > limit else None}
        body = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        context = f"{request.url.path}?{request.url.query}"
        signer = runtime.outbox.signer
        return Response(
            body,
            media_type="application/json",
            headers={KEY_HEADER: signer.key_id, SIGNATURE_HEADER: signer.sign_document(province, context, body)},
        )

    @router.post("/admin/v1/replica/heal", tags=["operations"])
    async def heal(
        request: HealRequest,
        runtime: RuntimeDep,
        _admin: Annotated[Principal, Depends(require_province_role(Role.ADMIN))],
    ) -> dict[str, Any]:
        """Fetch an origin's signed snapshot and apply what the replica lacks (newest version wins)."""
        if request.origin == runtime.settings.province or request.origin not in runtime.registry:
            raise Unprocessable(f"origin {request.origin} must be a partner province of this federation")
        base_url = request.base_url or runtime.settings.peer_url(request.origin, spec.service)
        if not base_url:
            raise Unprocessable(f"no address known for the {spec.service} service of {request.origin}; pass base_url")
        counts = {"inserted": 0, "updated": 0, "stale": 0}
        pages, after = 0, ""
        async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=30) as client:
            while True:
                params = {"after": after, "limit": str(PAGE_SIZE)}
                if request.updated_since is not None:
                    params["updated_since"] = request.updated_since.isoformat()
                query = urlencode(params)
                try:
                    response = await client.get(f"{spec.snapshot_path}?{query}")
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    raise Problem(
                        f"origin {request.origin} did not answer: {exc}", status=502, slug="origin-unreachable"
                    ) from exc
                try:
                    runtime.trust.current.verify_document(
                        request.origin,
                        response.headers.get(KEY_HEADER, ""),
                        response.headers.get(SIGNATURE_HEADER, ""),
                        f"{spec.snapshot_path}?{query}",
                        response.content,
                    )
                except SignatureRejected as exc:
                    raise Problem(f"snapshot page refused: {exc}", status=502, slug="snapshot-signature") from exc
                document = response.json()
                try:
                    rows = [spec.from_event(item) for item in document["items"]]
                except ValueError as exc:  # pydantic's ValidationError included
                    raise Problem(f"snapshot of {request.origin} holds an invalid record: {exc}", status=502) from exc
                async with runtime.sessions() as session, session.begin():
                    for row in rows:
                        if row[owner_key] != request.origin:
                            raise Problem(f"snapshot of {request.origin} carries {row['id']}", status=502)
                        counts[await spec.apply_row(session, row)] += 1
                pages += 1
                if not document["next_after"]:
                    break
                after = document["next_after"]
        return {"origin": request.origin, "pages": pages, **counts}

    return router
