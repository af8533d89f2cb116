"""The brand replica as a replicated kind: this province's signed snapshot of its brands (every status, so
revocations reach a healing replica) and digest, and the heal endpoint (``labornet.shared.replica``, ADR 0008).
Anti-entropy's repair is the default one: a brand row has nothing derived from it on a replica."""

from __future__ import annotations

from labornet.brands.adapters.search import plain
from labornet.brands.adapters.tables import brand
from labornet.brands.domain.brand import BrandRecord
from labornet.brands.service_layer.brands import apply_replica_row, from_event, to_event
from labornet.shared.replica import ReplicaSpec, replica_router

SPEC = ReplicaSpec(
    service="brands",
    noun="brands",
    table=brand,
    owner=brand.c.origin_province,
    to_event=to_event,
    from_event=from_event,
    apply_row=apply_replica_row,
    row=plain,
    record=BrandRecord,
)
SNAPSHOT_PATH = SPEC.snapshot_path
router = replica_router(SPEC)
