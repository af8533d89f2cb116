"""Anti-entropy: every node keeps comparing its replicas with each origin and makes them equal (ADR 0008).

The bus is the normal path, and the bus is what fails (a broker that lost its log, an event quarantined, a record
with a bogus version). So, without an operator and without the bus, each node pulls over HTTP from every partner
origin, per replicated kind, a signed **digest**: the origin's own rows in id order cut into ranges of about
``LABORNET_ANTIENTROPY_RANGE_ROWS`` rows, each with its bounds, its row count and a SHA-256 over the hashes of its
rows' wire form (``ReplicaSpec.to_event``), so that any change of any field is seen, whatever the version says.
The node computes the same over its copy of that origin's rows with the origin's bounds, fetches the origin's
signed snapshot of every range that differs, and makes its copy equal to it: **the origin is authoritative** —
rows that differ are replaced whatever their version, rows the origin does not have are deleted, missing rows are
inserted, each through the service's own repair path (``ReplicaSpec.replace_row`` / ``delete_row``).

:class:`AntiEntropy` holds both sides for one service: the origin's digest cache (so that eight partners share one
computation) and the replica's rounds, their state (``GET /admin/v1/sync``) and their metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field
from sqlalchemy import Column, Select, Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from labornet.shared.envelope import format_time, parse_time
from labornet.shared.settings import Settings
from labornet.shared.signing import SignatureRejected, Signer, TrustListFile

log = logging.getLogger(__name__)

KEY_HEADER, SIGNATURE_HEADER = "X-LaborNet-Key-Id", "X-LaborNet-Signature"
PAGE_SIZE = 200
REPAIR_PAGE_SIZE = 500  # the snapshot's largest page
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()

Repair = Literal["inserted", "replaced"]
REPAIR_ACTIONS = ("inserted", "replaced", "deleted")


@dataclass(frozen=True)
class ReplicaSpec:
    """One replicated kind of a service: the table that holds the origin's rows and every partner's copy."""

    service: str  # the service name, for the origin's address (``Settings.peer_url``)
    noun: str  # plural, for the path, messages and metric labels: "vacancies", "brands"
    table: Table
    owner: Column[Any]  # the column holding the owning province
    to_event: Callable[[dict[str, Any]], dict[str, Any]]  # a row as the wire record
    from_event: Callable[[Mapping[str, Any]], dict[str, Any]]  # the wire record as a row; ValidationError if invalid
    apply_row: Callable[[AsyncSession, dict[str, Any]], Awaitable[str]]  # events: "inserted" | "updated" | "stale"
    row: Callable[[Any], dict[str, Any]] = dict  # a result row as a plain dict
    # anti-entropy: make the replica's row equal to the origin's whatever its version (default: overwrite the row)
    replace_row: Callable[[AsyncSession, dict[str, Any]], Awaitable[Repair]] | None = None
    # anti-entropy: remove a row the origin does not have (default: delete the row)
    delete_row: Callable[[AsyncSession, str], Awaitable[None]] | None = None
    # the model of the wire record (``to_event``'s output), for the snapshot's schema in the OpenAPI document
    record: type[BaseModel] | None = None

    @property
    def snapshot_path(self) -> str:
        return f"/api/v1/federation/{self.noun}/snapshot"

    @property
    def digest_path(self) -> str:
        return f"/api/v1/federation/{self.noun}/digest"

    async def replace(self, session: AsyncSession, row: dict[str, Any]) -> Repair:
        if self.replace_row is not None:
            return await self.replace_row(session, row)
        return await replace_authoritative(session, self.table, row)

    async def delete(self, session: AsyncSession, row_id: str) -> None:
        if self.delete_row is not None:
            await self.delete_row(session, row_id)
        else:
            await session.execute(delete(self.table).where(self.table.c.id == row_id))

    def owned_by(self, province: str) -> Select[Any]:
        """The rows of ``province`` in id order (the order of ranges, snapshot pages and digests)."""
        return select(self.table).where(self.owner == province).order_by(self.table.c.id)


async def replace_authoritative(session: AsyncSession, table: Table, row: Mapping[str, Any]) -> Repair:
    """Insert ``row`` or overwrite the held copy whatever its version (the origin's word is final)."""
    held = (await session.execute(select(table.c.id).where(table.c.id == row["id"]))).scalar()
    if held is None:
        await session.execute(insert(table).values(**row))
        return "inserted"
    await session.execute(update(table).where(table.c.id == row["id"]).values(**row))
    return "replaced"


# Digests -------------------------------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def record_hash(record: Mapping[str, Any]) -> bytes:
    """SHA-256 of a wire record's canonical JSON: the same on every node for the same record."""
    return hashlib.sha256(canonical_json(record)).digest()


@dataclass(frozen=True)
class Range:
    """Ids ``> after`` and ``<= until`` (``""``: from the first id; ``None``: to the last) of one origin."""

    after: str
    until: str | None
    rows: int
    digest: str

    def holds(self, row_id: str) -> bool:
        return row_id > self.after and (self.until is None or row_id <= self.until)

    def to_json(self) -> dict[str, Any]:
        return {"after": self.after, "until": self.until, "rows": self.rows, "digest": self.digest}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Range:
        until = data["until"]
        return cls(str(data["after"]), None if until is None else str(until), int(data["rows"]), str(data["digest"]))


class _Folder:
    """Running SHA-256 of one range: the hashes of its rows in id order."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.rows = 0

    def add(self, row_hash: bytes) -> None:
        self.sha.update(row_hash)
        self.rows += 1

    def close(self, after: str, until: str | None) -> Range:
        return Range(after, until, self.rows, self.sha.hexdigest() if self.rows else EMPTY_DIGEST)


def cut(hashes: Iterable[tuple[str, bytes]], range_rows: int) -> list[Range]:
    """The origin's ranges: (id, row hash) in id order cut every ``range_rows`` rows; the last range is open."""
    ranges: list[Range] = []
    folder, after, last = _Folder(), "", ""
    for row_id, row_hash in hashes:
        if folder.rows == range_rows:
            ranges.append(folder.close(after, last))
            folder, after = _Folder(), last
        folder.add(row_hash)
        last = row_id
    ranges.append(folder.close(after, None))
    return ranges


def fold(hashes: Iterable[tuple[str, bytes]], bounds: Sequence[Range]) -> list[Range]:
    """The replica's ranges: its (id, row hash) in id order folded into the origin's ``bounds``."""
    folders = [_Folder() for _ in bounds]
    index = 0
    for row_id, row_hash in hashes:
        while not bounds[index].holds(row_id):
            index += 1
        folders[index].add(row_hash)
    return [f.close(b.after, b.until) for f, b in zip(folders, bounds, strict=True)]


def differing(origin: Sequence[Range], replica: Sequence[Range]) -> list[Range]:
    """The origin's ranges whose row count or digest the replica does not match."""
    return [
        mine
        for mine, theirs in zip(origin, replica, strict=True)
        if (mine.rows, mine.digest) != (theirs.rows, theirs.digest)
    ]


def covers_all_ids(ranges: Sequence[Range]) -> bool:
    """Ranges as an origin must send them: from the first id, contiguous, the last one open."""
    if not ranges or ranges[0].after != "" or ranges[-1].until is not None:
        return False
    return all(a.until is not None and a.until == b.after for a, b in itertools.pairwise(ranges))


@dataclass(frozen=True)
class Digest:
    origin: str
    kind: str
    computed_at: datetime
    rows: int
    ranges: tuple[Range, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "kind": self.kind,
            "computed_at": format_time(self.computed_at),
            "rows": self.rows,
            "ranges": [r.to_json() for r in self.ranges],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Digest:
        ranges = tuple(Range.from_json(r) for r in data["ranges"])
        if not covers_all_ids(ranges) or sum(r.rows for r in ranges) != int(data["rows"]):
            raise ValueError("digest ranges do not cover the id space or do not add up to its row count")
        return cls(
            str(data["origin"]), str(data["kind"]), parse_time(str(data["computed_at"])), int(data["rows"]), ranges
        )


async def stored_hashes(session: AsyncSession, spec: ReplicaSpec, province: str) -> AsyncIterator[tuple[str, bytes]]:
    """(id, hash of the wire record) of every row of ``province`` held here, in id order, streamed."""
    result = await session.stream(spec.owned_by(province).execution_options(yield_per=2000))
    async for row in result.mappings():
        yield row["id"], record_hash(spec.to_event(spec.row(row)))


async def _collect(hashes: AsyncIterator[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [item async for item in hashes]


# The replica's view ---------------------------------------------------------------------------------------


class OriginUnavailable(Exception):
    """The origin could not be asked (no address, unreachable, an error status); retried next round."""


class OriginRefused(Exception):
    """The origin answered something this node does not accept (signature, shape, foreign rows)."""


Status = Literal["never-compared", "in-sync", "repaired", "differing", "unreachable", "refused", "failed"]


@dataclass
class Comparison:
    """One comparison of this node's copy of one origin's kind with the origin (and its repair, if asked)."""

    origin: str
    kind: str
    compared_at: datetime
    checkpoint_at: datetime
    origin_rows: int
    ranges: int
    differing_ranges: int = 0
    differing_rows: int = 0
    inserted: int = 0
    replaced: int = 0
    deleted: int = 0

    @property
    def in_sync(self) -> bool:
        return self.differing_rows == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "kind": self.kind,
            "in_sync": self.in_sync,
            "compared_at": self.compared_at,
            "checkpoint_at": self.checkpoint_at,
            "checkpoint_age_s": round((self.compared_at - self.checkpoint_at).total_seconds(), 3),
            "origin_rows": self.origin_rows,
            "ranges": self.ranges,
            "differing_ranges": self.differing_ranges,
            "differing_rows": self.differing_rows,
            "inserted": self.inserted,
            "replaced": self.replaced,
            "deleted": self.deleted,
        }


class ComparisonReport(BaseModel):
    """One comparison of this node's copy of an origin's kind with the origin (``POST /admin/v1/replica/heal``)."""

    origin: str = Field(description="the partner province compared with", examples=["330000"])
    kind: str = Field(description="the replicated kind", examples=["vacancies"])
    in_sync: bool = Field(description="no row differed")
    compared_at: datetime
    checkpoint_at: datetime = Field(description="when the origin computed the digest compared with")
    checkpoint_age_s: float = Field(description="seconds between the origin's digest and the comparison")
    origin_rows: int = Field(description="rows the origin holds", examples=[1200])
    ranges: int = Field(description="digest ranges of the origin", examples=[3])
    differing_ranges: int = Field(description="ranges whose row count or digest differed", examples=[1])
    differing_rows: int = Field(description="rows that differed, were missing or were extra", examples=[2])
    inserted: int = Field(description="rows inserted by the repair (0 when only compared)", examples=[1])
    replaced: int = Field(description="rows replaced by the origin's copy", examples=[1])
    deleted: int = Field(description="rows removed because the origin does not have them", examples=[0])


class VerifiedReplica(ComparisonReport):
    """A comparison without repair (``GET /admin/v1/sync/verify``)."""

    error: None = Field(default=None, description="always null: the origin could be compared")


class ReplicaNotCompared(BaseModel):
    """An origin that could not be compared (unreachable, or its answer was refused)."""

    origin: str = Field(examples=["330000"])
    kind: str = Field(examples=["vacancies"])
    in_sync: bool = Field(description="always false", examples=[False])
    error: str = Field(examples=["origin 330000 did not answer /api/v1/federation/vacancies/digest: ..."])


class VerifyReport(BaseModel):
    """Every replica of this node compared with its origin now, nothing repaired."""

    province: str = Field(description="this node's province", examples=["510000"])
    in_sync: bool = Field(description="every replica equals its origin")
    replicas: list[VerifiedReplica | ReplicaNotCompared]


class RowsRepaired(BaseModel):
    inserted: int = Field(examples=[3])
    replaced: int = Field(examples=[1])
    deleted: int = Field(examples=[0])


class ReplicaSyncState(BaseModel):
    """What anti-entropy last found for one origin and kind (``GET /admin/v1/sync``)."""

    origin: str = Field(examples=["330000"])
    kind: str = Field(examples=["vacancies"])
    status: Status = Field(description="the outcome of the last round")
    last_round_at: datetime | None
    last_in_sync_at: datetime | None = Field(description="when the replica was last found or made equal")
    checkpoint_at: datetime | None = Field(description="when the origin computed the digest of the last round")
    checkpoint_age_s: float | None = Field(description="age of that digest now, in seconds")
    differing_ranges: int
    differing_rows: int
    rows_repaired: RowsRepaired = Field(description="rows repaired since start-up, by action")
    last_error: str | None
    last_error_at: datetime | None


@dataclass
class SyncState:
    """What the rounds found for one (origin, kind), as ``GET /admin/v1/sync`` shows it."""

    origin: str
    kind: str
    status: Status = "never-compared"
    last_round_at: datetime | None = None
    last_in_sync_at: datetime | None = None
    checkpoint_at: datetime | None = None
    differing_ranges: int = 0
    differing_rows: int = 0
    repaired: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPAIR_ACTIONS, 0))
    last_error: str | None = None
    last_error_at: datetime | None = None

    def to_json(self, now: datetime) -> dict[str, Any]:
        age = None if self.checkpoint_at is None else round((now - self.checkpoint_at).total_seconds(), 3)
        return {
            "origin": self.origin,
            "kind": self.kind,
            "status": self.status,
            "last_round_at": self.last_round_at,
            "last_in_sync_at": self.last_in_sync_at,
            "checkpoint_at": self.checkpoint_at,
            "checkpoint_age_s": age,
            "differing_ranges": self.differing_ranges,
            "differing_rows": self.differing_rows,
            "rows_repaired": dict(self.repaired),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }


OUTCOMES: tuple[Status, ...] = ("in-sync", "repaired", "unreachable", "refused", "failed")
_LABELS = ["service", "province", "origin", "kind"]
ROUNDS = Counter(
    "labornet_antientropy_rounds_total",
    "Anti-entropy comparisons of a replica with its origin, by outcome",
    [*_LABELS, "outcome"],
)
ROWS_REPAIRED = Counter(
    "labornet_antientropy_rows_repaired_total",
    "Replica rows made equal to the origin by anti-entropy (inserted, replaced, deleted)",
    [*_LABELS, "action"],
)
DIFFERING_ROWS = Gauge(
    "labornet_antientropy_differing_rows", "Replica rows that differed from the origin at the last round", _LABELS
)
DIFFERING_RANGES = Gauge(
    "labornet_antientropy_differing_ranges", "Digest ranges that differed from the origin at the last round", _LABELS
)
LAST_ROUND = Gauge(
    "labornet_antientropy_last_round_timestamp_seconds", "When the last round with the origin ended (0: never)", _LABELS
)
LAST_IN_SYNC = Gauge(
    "labornet_antientropy_last_in_sync_timestamp_seconds",
    "When the replica was last found equal to (or made equal to) the origin (0: never)",
    _LABELS,
)
CHECKPOINT_AGE = Gauge(
    "labornet_antientropy_checkpoint_age_seconds",
    "Age of the origin's digest used by the last successful round (-1: none yet)",
    _LABELS,
)
DIGEST_SECONDS = Gauge(
    "labornet_antientropy_digest_seconds", "Time the origin took to compute its last digest", ["service", "kind"]
)


class AntiEntropy:
    """The anti-entropy of one service of one node: serves its own digests, compares and repairs its replicas."""

    def __init__(
        self,
        *,
        settings: Settings,
        service: str,
        partners: Sequence[str],
        specs: Sequence[ReplicaSpec],
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession],
        signer: Signer,
        trust: TrustListFile,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.service = service
        self.province = settings.province
        self.partners = list(partners)
        self.specs = list(specs)
        self.sessions = sessions
        self.read_sessions = read_sessions
        self.signer = signer
        self.trust = trust
        self.clock = clock
        self.states = {(o, s.noun): SyncState(o, s.noun) for o in self.partners for s in self.specs}
        self._digests: dict[str, tuple[float, bytes]] = {}
        self._digest_locks = {s.noun: asyncio.Lock() for s in self.specs}
        self._rounds_lock = asyncio.Lock()
        for origin in self.partners:  # every series exists from start-up, so increase() sees the first change
            for spec in self.specs:
                labels = (service, self.province, origin, spec.noun)
                for outcome in OUTCOMES:
                    ROUNDS.labels(*labels, outcome)
                for action in REPAIR_ACTIONS:
                    ROWS_REPAIRED.labels(*labels, action)
                DIFFERING_ROWS.labels(*labels).set(0)
                DIFFERING_RANGES.labels(*labels).set(0)
                LAST_ROUND.labels(*labels).set(0)
                LAST_IN_SYNC.labels(*labels).set(0)
                CHECKPOINT_AGE.labels(*labels).set(-1)
        for spec in self.specs:
            DIGEST_SECONDS.labels(service, spec.noun).set(0)

    # the origin's side ------------------------------------------------------------------------------------

    async def digest_body(self, spec: ReplicaSpec) -> bytes:
        """This province's digest of ``spec`` as signed JSON bytes, computed at most once per TTL."""
        async with self._digest_locks[spec.noun]:
            cached = self._digests.get(spec.noun)
            if cached is not None and time.monotonic() - cached[0] < self.settings.antientropy_digest_ttl_s:
                return cached[1]
            started = time.perf_counter()
            computed_at = self.clock()
            async with self.read_sessions() as session:
                hashes = await _collect(stored_hashes(session, spec, self.province))
            ranges = cut(hashes, self.settings.antientropy_range_rows)
            body = canonical_json(Digest(self.province, spec.noun, computed_at, len(hashes), tuple(ranges)).to_json())
            DIGEST_SECONDS.labels(self.service, spec.noun).set(time.perf_counter() - started)
            self._digests[spec.noun] = (time.monotonic(), body)
            return body

    # the replica's side -----------------------------------------------------------------------------------

    def spec(self, noun: str) -> ReplicaSpec:
        return next(s for s in self.specs if s.noun == noun)

    def base_url(self, origin: str, spec: ReplicaSpec) -> str:
        url = self.settings.peer_url(origin, spec.service)
        if not url:
            raise OriginUnavailable(f"no address known for the {spec.service} service of {origin}")
        return url.rstrip("/")

    async def _signed_get(self, client: httpx.AsyncClient, origin: str, path: str, params: dict[str, str]) -> Any:
        context = f"{path}?{urlencode(params)}"
        try:
            response = await client.get(context)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise OriginUnavailable(f"origin {origin} did not answer {path}: {exc or type(exc).__name__}") from exc
        try:
            self.trust.current.verify_document(
                origin,
                response.headers.get(KEY_HEADER, ""),
                response.headers.get(SIGNATURE_HEADER, ""),
                context,
                response.content,
            )
        except SignatureRejected as exc:
            raise OriginRefused(f"{path} of {origin} refused: {exc}") from exc
        try:
            return response.json()
        except ValueError as exc:
            raise OriginRefused(f"{path} of {origin} is not JSON") from exc

    async def _origin_range(
        self, client: httpx.AsyncClient, origin: str, spec: ReplicaSpec, bounds: Range
    ) -> dict[str, dict[str, Any]]:
        """The origin's signed wire records of one range, by id."""
        records: dict[str, dict[str, Any]] = {}
        after = bounds.after
        while True:
            params = {"after": after, "limit": str(REPAIR_PAGE_SIZE)}
            if bounds.until is not None:
                params["until"] = bounds.until
            page = await self._signed_get(client, origin, spec.snapshot_path, params)
            try:
                items, next_after = list(page["items"]), page["next_after"]
            except (KeyError, TypeError) as exc:
                raise OriginRefused(f"snapshot of {origin} lacks items or next_after") from exc
            for item in items:
                if (
                    not isinstance(item, dict)
                    or item.get(spec.owner.key) != origin
                    or not bounds.holds(item.get("id", ""))
                ):
                    raise OriginRefused(f"snapshot of {origin} carries a record outside its range or not its own")
                records[item["id"]] = item
            if not next_after:
                return records
            after = next_after

    async def _held_range(
        self, session: AsyncSession, origin: str, spec: ReplicaSpec, bounds: Range
    ) -> dict[str, bytes]:
        id_column = spec.table.c.id
        query = spec.owned_by(origin).where(id_column > bounds.after)
        if bounds.until is not None:
            query = query.where(id_column <= bounds.until)
        rows = (await session.execute(query)).mappings().all()
        return {row["id"]: record_hash(spec.to_event(spec.row(row))) for row in rows}

    async def compare(self, origin: str, spec: ReplicaSpec, *, repair: bool, base_url: str | None = None) -> Comparison:
        """Compare this node's copy of ``origin``'s ``spec`` rows with the origin; make it equal if ``repair``."""
        url = base_url.rstrip("/") if base_url else self.base_url(origin, spec)
        async with httpx.AsyncClient(base_url=url, timeout=self.settings.antientropy_timeout_s) as client:
            document = await self._signed_get(client, origin, spec.digest_path, {})
            try:
                digest = Digest.from_json(document)
            except (KeyError, TypeError, ValueError) as exc:
                raise OriginRefused(f"digest of {origin} is malformed: {exc}") from exc
            if digest.origin != origin or digest.kind != spec.noun:
                raise OriginRefused(f"digest of {origin} is for {digest.origin} {digest.kind}")
            async with self.read_sessions() as session:
                held = fold(await _collect(stored_hashes(session, spec, origin)), digest.ranges)
            result = Comparison(origin, spec.noun, self.clock(), digest.computed_at, digest.rows, len(digest.ranges))
            for bounds in differing(digest.ranges, held):
                result.differing_ranges += 1
                theirs = await self._origin_range(client, origin, spec, bounds)
                await self._reconcile_range(origin, spec, bounds, theirs, result, repair)
        return result

    async def _reconcile_range(
        self,
        origin: str,
        spec: ReplicaSpec,
        bounds: Range,
        theirs: dict[str, dict[str, Any]],
        result: Comparison,
        repair: bool,
    ) -> None:
        sessions = self.sessions if repair else self.read_sessions
        async with sessions() as session, session.begin():
            mine = await self._held_range(session, origin, spec, bounds)
            changed = [record for row_id, record in theirs.items() if mine.get(row_id) != record_hash(record)]
            extra = sorted(set(mine) - set(theirs))
            result.differing_rows += len(changed) + len(extra)
            if not repair:
                return
            try:
                rows = [spec.from_event(record) for record in changed]
            except ValueError as exc:  # pydantic's ValidationError included
                raise OriginRefused(f"snapshot of {origin} holds an invalid record: {exc}") from exc
            for row in rows:
                outcome = await spec.replace(session, row)
                setattr(result, outcome, getattr(result, outcome) + 1)
            for row_id in extra:
                await spec.delete(session, row_id)
                result.deleted += 1

    async def round(self, origin: str, spec: ReplicaSpec, base_url: str | None = None) -> Comparison:
        """One repairing comparison, recorded in the state and the metrics; errors are recorded and raised."""
        state = self.states.setdefault((origin, spec.noun), SyncState(origin, spec.noun))
        labels = (self.service, self.province, origin, spec.noun)
        try:
            result = await self.compare(origin, spec, repair=True, base_url=base_url)
        except Exception as exc:
            outcome: Status = (
                "unreachable"
                if isinstance(exc, OriginUnavailable)
                else "refused"
                if isinstance(exc, OriginRefused)
                else "failed"
            )
            now = self.clock()
            state.status, state.last_round_at = outcome, now
            state.last_error, state.last_error_at = f"{type(exc).__name__}: {exc}", now
            ROUNDS.labels(*labels, outcome).inc()
            LAST_ROUND.labels(*labels).set(now.timestamp())
            raise
        state.status = "in-sync" if result.in_sync else "repaired"
        state.last_round_at = result.compared_at
        state.checkpoint_at = result.checkpoint_at
        state.differing_ranges, state.differing_rows = result.differing_ranges, result.differing_rows
        state.last_in_sync_at = result.compared_at  # equal now, either found so or made so
        state.last_error = None
        for action in REPAIR_ACTIONS:
            count = getattr(result, action)
            state.repaired[action] += count
            ROWS_REPAIRED.labels(*labels, action).inc(count)
        ROUNDS.labels(*labels, state.status).inc()
        DIFFERING_ROWS.labels(*labels).set(result.differing_rows)
        DIFFERING_RANGES.labels(*labels).set(result.differing_ranges)
        LAST_ROUND.labels(*labels).set(result.compared_at.timestamp())
        LAST_IN_SYNC.labels(*labels).set(result.compared_at.timestamp())
        CHECKPOINT_AGE.labels(*labels).set((result.compared_at - result.checkpoint_at).total_seconds())
        if not result.in_sync:
            log.warning(
                "anti-entropy: %s of %s differed in %d rows (%d ranges): %d inserted, %d replaced, %d deleted",
                spec.noun,
                origin,
                result.differing_rows,
                result.differing_ranges,
                result.inserted,
                result.replaced,
                result.deleted,
            )
        return result

    async def round_all(self) -> None:
        """One round over every partner origin and kind; a failure is recorded and the next pair goes on."""
        async with self._rounds_lock:
            for origin in self.partners:
                for spec in self.specs:
                    try:
                        await self.round(origin, spec)
                    except asyncio.CancelledError:
                        raise
                    except (OriginUnavailable, OriginRefused) as exc:
                        log.warning("anti-entropy with %s (%s): %s; retrying next round", origin, spec.noun, exc)
                    except Exception:
                        log.exception("anti-entropy with %s (%s) failed; retrying next round", origin, spec.noun)

    async def verify(self) -> list[dict[str, Any]]:
        """Compare every partner origin and kind now, without repairing: one entry each, errors included."""
        report: list[dict[str, Any]] = []
        for origin in self.partners:
            for spec in self.specs:
                try:
                    report.append((await self.compare(origin, spec, repair=False)).to_json() | {"error": None})
                except Exception as exc:  # an origin that cannot be compared is reported, never a 500
                    error = str(exc) if isinstance(exc, OriginUnavailable | OriginRefused) else repr(exc)
                    report.append({"origin": origin, "kind": spec.noun, "in_sync": False, "error": error})
        return report

    def jittered(self, seconds: float) -> float:
        spread = self.settings.antientropy_jitter
        return max(0.0, seconds * (1 + random.uniform(-spread, spread)))

    async def run(self) -> None:
        """Rounds forever: the first soon after start-up, then every interval (with jitter)."""
        await asyncio.sleep(self.jittered(self.settings.antientropy_first_round_s))
        while True:
            await self.round_all()
            await asyncio.sleep(self.jittered(self.settings.antientropy_interval_s))

    def state(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [state.to_json(now) for state in self.states.values()]
