"""Anti-entropy between nodes: an origin serves a signed snapshot of its brands; a node heals its replica.

Events are the normal path. When a replica may be missing data — a node joining late, a broker that lost its
log, gaps reported by ``/admin/v1/sync`` — an operator asks the origin for its snapshot. Each page is signed with
the origin's node key (Ed25519 over province, request and body), so the healing node verifies it against the
federation trust list exactly like events; rows are applied with the same newest-version-wins rule.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from labornet.brands.adapters.search import plain
from labornet.brands.adapters.tables import brand
from labornet.brands.service_layer.brands import apply_replica_row, from_event, to_event
from labornet.shared.app import RuntimeDep
from labornet.shared.auth import Principal, Role, require_province_role
from labornet.shared.problems import Problem, Unprocessable
from labornet.shared.signing import SignatureRejected

SNAPSHOT_PATH = "/api/v1/federation/brands/snapshot"
KEY_HEADER, SIGNATURE_HEADER = "X-LaborNet-Key-Id", "X-LaborNet-Signature"
PAGE_SIZE = 200

router = APIRouter(tags=["federation"])


@router.get(SNAPSHOT_PATH)
async def snapshot(
    runtime: RuntimeDep,
    request: Request,
    after: Annotated[str | None, Query(max_length=40, description="cursor: the last id of the previous page")] = None,
    updated_since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
) -> Response:
    """This province's own brands (every status, so revocations reach a healing replica), signed per page."""
    province = runtime.settings.province
    query = select(brand).where(brand.c.origin_province == province).order_by(brand.c.id).limit(limit + 1)
    if after:
        query = query.where(brand.c.id > after)
    if updated_since is not None:
        query = query.where(brand.c.updated_at >= updated_since)
    async with runtime.read_sessions() as session:
        rows = (await session.execute(query)).mappings().all()
    items = [to_event(plain(row)) for row in rows[:limit]]
    document = {"origin": province, "items": items, "next_after": items[-1]["id"] if len(rows) > limit else None}
    body = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    context = f"{request.url.path}?{request.url.query}"
    signer = runtime.outbox.signer
    return Response(
        body,
        media_type="application/json",
        headers={KEY_HEADER: signer.key_id, SIGNATURE_HEADER: signer.sign_document(province, context, body)},
    )


class HealRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    origin: str = Field(pattern=r"^\d{2}0000$", description="the province whose brands to fetch")
    base_url: str | None = Field(None, description="the origin's brands service; default from the federation file")
    updated_since: datetime | None = None


@router.post("/admin/v1/replica/heal", tags=["operations"])
async def heal(
    request: HealRequest,
    runtime: RuntimeDep,
    _admin: Annotated[Principal, Depends(require_province_role(Role.ADMIN))],
) -> dict[str, Any]:
    """Fetch an origin's signed snapshot and apply what the replica lacks (newest version wins)."""
    if request.origin == runtime.settings.province or request.origin not in runtime.registry:
        raise Unprocessable(f"origin {request.origin} must be a partner province of this federation")
    base_url = request.base_url or runtime.settings.peer_url(request.origin, "brands")
    if not base_url:
        raise Unprocessable(f"no address known for the brands service of {request.origin}; pass base_url")
    counts = {"inserted": 0, "updated": 0, "stale": 0}
    pages = 0
    after = ""
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=30) as client:
        while True:
            params = {"after": after, "limit": str(PAGE_SIZE)}
            if request.updated_since is not None:
                params["updated_since"] = request.updated_since.isoformat()
            query = urlencode(params)
            try:
                response = await client.get(f"{SNAPSHOT_PATH}?{query}")
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
                    f"{SNAPSHOT_PATH}?{query}",
                    response.content,
                )
            except SignatureRejected as exc:
                raise Problem(f"snapshot page refused: {exc}", status=502, slug="snapshot-signature") from exc
            document = response.json()
            try:
                rows = [from_event(item) for item in document["items"]]
            except ValidationError as exc:
                raise Problem(f"snapshot of {request.origin} holds an invalid brand: {exc}", status=502) from exc
            async with runtime.sessions() as session, session.begin():
                for row in rows:
                    if row["origin_province"] != request.origin:
                        raise Problem(f"snapshot of {request.origin} carries {row['id']}", status=502)
                    counts[await apply_replica_row(session, row)] += 1
            pages += 1
            if not document["next_after"]:
                break
            after = document["next_after"]
    return {"origin": request.origin, "pages": pages, **counts}
