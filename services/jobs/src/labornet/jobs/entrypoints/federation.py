"""The vacancy replica as a replicated kind: this province's signed snapshot and digest, the heal endpoint, and
the repair anti-entropy uses (``labornet.shared.replica``, ADR 0008; docs/operations/jobs-replica.md)."""

from __future__ import annotations

from labornet.jobs.adapters.tables import vacancy
from labornet.jobs.domain.vacancy import VacancyRecord
from labornet.jobs.service_layer.replica_repair import delete_vacancy, replace_vacancy
from labornet.jobs.service_layer.vacancies import apply_replica_row, from_event, to_event
from labornet.shared.replica import ReplicaSpec, replica_router

SPEC = ReplicaSpec(
    service="jobs",
    noun="vacancies",
    table=vacancy,
    owner=vacancy.c.owner_province,
    to_event=to_event,
    from_event=from_event,
    apply_row=apply_replica_row,
    replace_row=replace_vacancy,
    delete_row=delete_vacancy,
    record=VacancyRecord,
)
SNAPSHOT_PATH = SPEC.snapshot_path
router = replica_router(SPEC)
