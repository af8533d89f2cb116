"""A replicated kind over HTTP: the origin's signed snapshot and digest, and the heal endpoint (ADR 0008).

Events are the normal path; :mod:`labornet.shared.antientropy` is what keeps replicas equal when the bus fails.
Every document an origin serves here is signed with its node key (Ed25519 over province, request and body), so a
node verifies it against the federation trust list exactly like events.

A service describes its replicated table with a :class:`ReplicaSpec`, lists it in ``ServiceSpec.replicas`` and
mounts :func:`replica_router`:

* ``GET /api/v1/federation/<noun>/snapshot`` (public, signed): the origin's own rows in every state, in id order,
  paged by ``after`` (exclusive) and bounded by ``until`` (inclusive);
* ``GET /api/v1/federation/<noun>/digest`` (public, signed): the origin's rows cut into ranges, each with its row
  count and digest (cached for ``LABORNET_ANTIENTROPY_DIGEST_TTL_S``);
* ``POST /admin/v1/replica/heal`` (admin): one anti-entropy round with one origin now — the origin is
  authoritative, the replica is made equal to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.shared.antientropy import (
    KEY_HEADER,
    PAGE_SIZE,
    REPAIR_PAGE_SIZE,
    SIGNATURE_HEADER,
    ComparisonReport,
    OriginRefused,
    OriginUnavailable,
    ReplicaSpec,
    canonical_json,
)
from labornet.shared.app import AdminDep, Runtime, RuntimeDep
from labornet.shared.db import insert_of, update_of, update_parameters
from labornet.shared.envelope import Envelope
from labornet.shared.problems import Problem, Unprocessable, problem_responses

__all__ = ["KEY_HEADER", "SIGNATURE_HEADER", "ReplicaSpec", "check_owner", "replica_router", "upsert_newer"]


def check_owner(row: Mapping[str, Any], envelope: Envelope, owner_key: str, noun: str) -> None:
    """A replicated record comes from its owner, under its own key; ``ValueError`` (quarantine) otherwise."""
    if row[owner_key] != envelope.originprovince:
        raise ValueError(f"event from {envelope.originprovince} carries {noun} {row['id']} of {row[owner_key]}")
    if row["id"] != envelope.partitionkey:
        raise ValueError(f"event key {envelope.partitionkey} differs from {noun} id {row['id']}")


async def upsert_newer(session: AsyncSession, table: Table, row: Mapping[str, Any]) -> str:
    """Insert ``row``, or update the held copy if ``row`` has a higher ``version``: "inserted", "updated" or "stale".

    Versions order the changes of one record, so an old event arriving late never overwrites a newer one and a
    replayed event changes nothing. (Anti-entropy does not use this rule: there the origin's copy wins.)"""
    held = (await session.execute(select(table.c.version).where(table.c.id == row["id"]))).scalar()
    if held is None:
        await session.execute(insert_of(table), row)
        return "inserted"
    if row["version"] > held:
        await session.execute(
            update_of(table, "id"), update_parameters({k: v for k, v in row.items() if k != "id"}, id=row["id"])
        )
        return "updated"
    return "stale"


class HealRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    origin: str = Field(pattern=r"^\d{2}0000$", description="the partner province whose records to compare")
    base_url: str | None = Field(
        None,
        max_length=2000,
        # an ASCII host name (IDNA-encoded if need be) or an IP literal, an optional port and path
        pattern=r"^https?://(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?(?:/[!-~]*)?$",
        description="the origin's service (http or https URL); default from the settings or federation file",
        examples=["http://jobs.labornet-330000.svc:8000"],
    )

    @field_validator("base_url")
    @classmethod
    def _dialable(cls, value: str | None) -> str | None:
        """What the pattern lets through must also be a URL the HTTP client can dial (a port up to 65535)."""
        if value is None:
            return None
        try:
            port = httpx.URL(value).port
        except (httpx.InvalidURL, ValueError) as exc:
            raise ValueError(f"not a URL the node can call: {exc}") from exc
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        return value


class ReplicaSnapshot(BaseModel):
    """One page of the origin's own records of a kind, in id order (signed: see the response headers)."""

    origin: str = Field(description="the province whose records these are", examples=["330000"])
    items: list[dict[str, Any]] = Field(
        description="the records as their events carry them (the kind's event data in the AsyncAPI document)"
    )
    next_after: str | None = Field(
        description="the id to pass as `after` for the next page; null on the last page",
        examples=["330000-V-20261126-000042"],
    )


class DigestRange(BaseModel):
    """The origin's records with ids ``> after`` and ``<= until``."""

    after: str = Field(description='the exclusive lower bound ("" for the first range)', examples=[""])
    until: str | None = Field(description="the inclusive upper bound; null for the last range")
    rows: int = Field(description="records in the range", examples=[500])
    digest: str = Field(
        description="SHA-256 (hex) over the SHA-256 of each record's canonical JSON, in id order",
        examples=["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
    )


class ReplicaDigest(BaseModel):
    """The origin's records of a kind cut into ranges, each with its row count and digest (signed)."""

    origin: str = Field(examples=["330000"])
    kind: str = Field(examples=["vacancies"])
    computed_at: datetime = Field(description="when the origin computed it (cached for a few seconds)")
    rows: int = Field(description="all the origin's records of the kind", examples=[1200])
    ranges: list[DigestRange] = Field(description="contiguous, from the first id, the last one open")


_SIGNED_HEADERS = {
    KEY_HEADER: {"description": "the id of the node key that signed the body", "schema": {"type": "string"}},
    SIGNATURE_HEADER: {
        "description": "Ed25519 signature over the province, the request path and query, and the body",
        "schema": {"type": "string"},
    },
}


def _signed(runtime: Runtime, request: Request, body: bytes) -> Response:
    province = runtime.settings.province
    signer = runtime.outbox.signer
    context = f"{request.url.path}?{request.url.query}"
    return Response(
        body,
        media_type="application/json",
        headers={KEY_HEADER: signer.key_id, SIGNATURE_HEADER: signer.sign_document(province, context, body)},
    )


def _snapshot_model(spec: ReplicaSpec) -> type[ReplicaSnapshot]:
    """The snapshot page of ``spec``'s kind, its items typed by the kind's record model when it has one."""
    if spec.record is None:
        return ReplicaSnapshot
    items: Any = list[spec.record]  # type: ignore[name-defined]
    return create_model(
        f"{spec.noun.capitalize()}Snapshot",
        __base__=ReplicaSnapshot,
        __doc__=ReplicaSnapshot.__doc__,
        items=(items, Field(description="the records as their events carry them")),
    )


def replica_router(spec: ReplicaSpec) -> APIRouter:
    router = APIRouter()

    @router.get(
        spec.snapshot_path,
        tags=["federation"],
        response_class=JSONResponse,
        responses={
            200: {"model": _snapshot_model(spec), "description": "one signed page", "headers": _SIGNED_HEADERS},
            **problem_responses(422),
        },
    )
    async def snapshot(
        runtime: RuntimeDep,
        request: Request,
        after: Annotated[
            str | None, Query(max_length=40, description="cursor: the last id of the previous page")
        ] = None,
        until: Annotated[
            str | None, Query(max_length=40, description="the last id to include (a digest range)")
        ] = None,
        updated_since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=REPAIR_PAGE_SIZE)] = PAGE_SIZE,
    ) -> Response:
        """This province's own records in every state (so closures reach a healing replica), signed per page."""
        id_column = spec.table.c.id
        query = spec.owned_by(runtime.settings.province).limit(limit + 1)
        if after:
            query = query.where(id_column > after)
        if until is not None:
            query = query.where(id_column <= until)
        if updated_since is not None:
            query = query.where(spec.table.c.updated_at >= updated_since)
        async with runtime.read_sessions() as session:
            rows = (await session.execute(query)).mappings().all()
        items = [spec.to_event(spec.row(row)) for row in rows[:limit]]
        next_after = items[-1]["id"] if len(rows) > limit else None
        document = {"origin": runtime.settings.province, "items": items, "next_after": next_after}
        return _signed(runtime, request, canonical_json(document))

    @router.get(
        spec.digest_path,
        tags=["federation"],
        response_class=JSONResponse,
        responses={200: {"model": ReplicaDigest, "description": "the signed digest", "headers": _SIGNED_HEADERS}},
    )
    async def digest(runtime: RuntimeDep, request: Request) -> Response:
        """This province's records in id order cut into ranges: first id bound, row count and SHA-256 of each."""
        return _signed(runtime, request, await runtime.antientropy.digest_body(spec))

    @router.post(
        "/admin/v1/replica/heal",
        tags=["operations"],
        response_description="the comparison and what it repaired",
        responses=problem_responses(401, 403, 422, 502),
    )
    async def heal(request: HealRequest, runtime: RuntimeDep, _admin: AdminDep) -> ComparisonReport:
        """Compare the replica with one origin now and make it equal to the origin (the origin is authoritative)."""
        if request.origin == runtime.settings.province or request.origin not in runtime.registry:
            raise Unprocessable(f"origin {request.origin} must be a partner province of this federation")
        base_url = request.base_url or runtime.settings.peer_url(request.origin, spec.service)
        if not base_url:
            raise Unprocessable(f"no address known for the {spec.service} service of {request.origin}; pass base_url")
        try:
            result = await runtime.antientropy.round(request.origin, spec, base_url=base_url)
        except OriginUnavailable as exc:
            raise Problem(str(exc), status=502, slug="origin-unreachable") from exc
        except OriginRefused as exc:
            raise Problem(str(exc), status=502, slug="origin-refused") from exc
        return ComparisonReport.model_validate(result.to_json())

    return router
