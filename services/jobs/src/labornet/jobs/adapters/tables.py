"""The jobs service's tables (SQLAlchemy Core). One database per node's jobs service.

``vacancy`` holds both the province's own vacancies and the replica of every partner's (``owner_province`` tells
which); the owner is the only writer of a vacancy, and ``version`` orders its changes.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from labornet.shared.db import NAMING_CONVENTION, Id

metadata = MetaData(naming_convention=NAMING_CONVENTION)

vacancy = Table(
    "vacancy",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_province", String(6), nullable=False),
    Column("employer_name", String(200), nullable=False),
    Column("employer_credit_code", String(18), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("occupation_code", String(10), nullable=False),
    Column("occupation_name", String(200), nullable=False),
    Column("division_code", String(6), nullable=False),
    Column("city", String(100), nullable=False),
    Column("headcount", Integer, nullable=False),
    # applicants hired through the platform (applications, jobs_0008): the open headcount is headcount - hired
    Column("hired", Integer, nullable=False, server_default="0"),
    Column("salary_min", Integer, nullable=False),
    Column("salary_max", Integer, nullable=False),
    Column("employment_type", String(20), nullable=False),
    Column("target_groups", JSON, nullable=False),
    Column("skills", JSON, nullable=False),
    Column("brand_id", String(64), nullable=True),
    Column("contact", String(200), nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False),
    Column("closing_date", Date, nullable=False),
    Column("status", String(12), nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # CJK bigrams and lower-cased Latin words of the searchable text, space separated (see domain/text.py)
    Column("search_tokens", Text, nullable=False),
)
Index("ix_vacancy_status_posted", vacancy.c.status, vacancy.c.posted_at, vacancy.c.id)
Index("ix_vacancy_owner_status", vacancy.c.owner_province, vacancy.c.status)
Index("ix_vacancy_occupation", vacancy.c.occupation_code, vacancy.c.status)
Index("ix_vacancy_division", vacancy.c.division_code, vacancy.c.status)
Index("ix_vacancy_salary", vacancy.c.status, vacancy.c.salary_max, vacancy.c.id)

subscription = Table(
    "subscription",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("worker", String(200), nullable=False),  # the token's sub
    Column("occupation_codes", JSON, nullable=False),  # [] = any
    Column("provinces", JSON, nullable=False),  # destination provinces, [] = any
    Column("division_codes", JSON, nullable=False),  # destination cities/divisions, [] = any
    Column("min_salary", Integer, nullable=True),
    Column("keywords", JSON, nullable=False),  # every keyword must occur in the vacancy text
    Column("target_group", String(40), nullable=True),
    Column("webhook_url", String(500), nullable=True),
    Column("webhook_secret", String(128), nullable=True),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_subscription_worker", subscription.c.worker, subscription.c.active)

match = Table(
    "vacancy_match",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subscription_id", String(40), nullable=False),
    Column("worker", String(200), nullable=False),
    Column("vacancy_id", String(40), nullable=False),
    Column("vacancy_version", Integer, nullable=False),
    Column("vacancy_status", String(12), nullable=False),
    Column("matched_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("subscription_id", "vacancy_id", name="uq_vacancy_match_subscription_vacancy"),
)
Index("ix_vacancy_match_worker", match.c.worker, match.c.id)
Index("ix_vacancy_match_vacancy", match.c.vacancy_id)

webhook_delivery = Table(
    "webhook_delivery",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("match_id", Integer, nullable=False),
    Column("subscription_id", String(40), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("failed_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
)
Index(
    "ix_webhook_delivery_due",
    webhook_delivery.c.delivered_at,
    webhook_delivery.c.failed_at,
    webhook_delivery.c.next_attempt_at,
)

# A bulk import of vacancies (entrypoints/imports.py): its progress, committed with every batch it publishes
vacancy_import = Table(
    "vacancy_import",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("officer", String(200), nullable=False),  # the token's sub
    Column("format", String(10), nullable=False),  # csv or ndjson
    Column("mode", String(20), nullable=False),  # valid-rows or all-or-nothing
    Column("state", String(12), nullable=False),  # queued, running, completed, failed
    Column("bytes", Id, nullable=False),
    Column("rows_read", Integer, nullable=False),
    Column("rows_valid", Integer, nullable=False),
    Column("rows_rejected", Integer, nullable=False),
    Column("rows_published", Integer, nullable=False),
    Column("published_through_line", Integer, nullable=False),  # every valid row up to this line is published
    Column("errors", JSON, nullable=False),  # the first errors, by line
    Column("message", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)
Index("ix_vacancy_import_state", vacancy_import.c.state)

# --- Placements (issue 15): hires between two provinces and the partners' placement statistics ---

# One row per hire of a worker by an employer of another province, kept at both ends: the worker's home node
# (origin) and the vacancy owner's node (destination). A hire within one province is kept too and counted in
# neither direction. ``announced`` turns true once this node's published statistics include the hire.
placement = Table(
    "placement",
    metadata,
    Column("application_id", String(40), primary_key=True),
    Column("origin_province", String(6), nullable=False),  # the worker's home province
    Column("destination_province", String(6), nullable=False),  # the vacancy's owner
    Column("hired_at", DateTime(timezone=True), nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM, the China date of the hire
    Column("occupation_code", String(10), nullable=False),
    Column("target_groups", JSON, nullable=False),
    Column("announced", Boolean, nullable=False),
)
Index("ix_placement_origin_month", placement.c.origin_province, placement.c.month)
Index("ix_placement_destination_month", placement.c.destination_province, placement.c.month)
Index("ix_placement_announced", placement.c.announced)

# The latest placement statistics of every member: this node's own row orders what it publishes, a partner's holds
# the newest snapshot received of any month
placement_statistics_origin = Table(
    "placement_statistics_origin",
    metadata,
    Column("origin", String(6), primary_key=True),
    Column("generation", Id, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
)

# The generation of the snapshot held for each month of a partner (one snapshot per origin and month)
placement_statistics_month = Table(
    "placement_statistics_month",
    metadata,
    Column("origin", String(6), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("generation", Id, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
)

# A partner's latest snapshots, one row per cell: counts only, never a person
placement_statistics_cell = Table(
    "placement_statistics_cell",
    metadata,
    Column("origin", String(6), primary_key=True),  # the province that published the snapshot
    Column("direction", String(8), primary_key=True),  # outbound or inbound, seen from the origin
    Column("counterpart_province", String(6), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("occupation_code", String(10), primary_key=True),
    Column("hires", Integer, nullable=False),
    Column("target_groups", JSON, nullable=False),  # {group: hires of the cell in that group}
)

# --- Joint recruitment events (issue 15): the event, each organising province's listing, registrations ---

# Every node's replica of every event (the organiser's own included); the organiser is the only writer, ``version``
# orders its changes. ``provinces`` is the organiser and co-organisers as " 500000 510000 " (filtered with LIKE on
# either database). The registration counts are the organiser's latest anonymous statistics of the event
# (``statistics_generation`` orders them); ``statistics_due`` marks, at the organiser, counts to publish again.
recruitment_fair = Table(
    "recruitment_fair",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("organiser_province", String(6), nullable=False),
    Column("co_organisers", JSON, nullable=False),
    Column("provinces", String(300), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("campaign", String(40), nullable=False),
    Column("mode", String(10), nullable=False),
    Column("url", String(500), nullable=True),
    Column("division_code", String(6), nullable=True),
    Column("address", String(300), nullable=True),
    Column("starts_on", Date, nullable=False),
    Column("ends_on", Date, nullable=False),
    Column("registration_closes_at", DateTime(timezone=True), nullable=False),
    Column("capacity", Integer, nullable=True),
    Column("status", String(12), nullable=False),
    Column("cancel_reason", String(500), nullable=True),
    Column("outcomes", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("statistics_generation", Id, nullable=False),
    Column("statistics_as_of", DateTime(timezone=True), nullable=True),
    Column("registration_counts", JSON, nullable=False),
    Column("statistics_due", Boolean, nullable=False),
)
Index("ix_recruitment_fair_starts_on", recruitment_fair.c.starts_on, recruitment_fair.c.id)
Index("ix_recruitment_fair_organiser", recruitment_fair.c.organiser_province, recruitment_fair.c.status)

# One organising province's vacancies at one event: that province is its only writer
recruitment_fair_listing = Table(
    "recruitment_fair_listing",
    metadata,
    Column("fair_id", String(40), primary_key=True),
    Column("province", String(6), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("fair_version", Integer, nullable=False),
    Column("vacancy_ids", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Registrations: at the worker's home node (``worker`` is the token's sub, known there only) and at the organiser's
# (``worker`` null). ``active_fair`` is the event id while the registration is submitted or accepted, null after:
# one active registration of a worker per event (NULLs never collide in a unique constraint).
fair_registration = Table(
    "fair_registration",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("fair_id", String(40), nullable=False),
    Column("organiser_province", String(6), nullable=False),
    Column("home_province", String(6), nullable=False),
    Column("worker", String(200), nullable=True),
    Column("active_fair", String(40), nullable=True),
    Column("name", String(50), nullable=False),
    Column("phone", String(20), nullable=False),
    Column("occupations", JSON, nullable=False),
    Column("note", String(500), nullable=True),
    Column("status", String(12), nullable=False),
    Column("reason", String(40), nullable=True),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=True),  # at the organiser
    Column("answered_at", DateTime(timezone=True), nullable=True),
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("worker", "active_fair", name="uq_fair_registration_worker_active_fair"),
)
Index("ix_fair_registration_fair", fair_registration.c.fair_id, fair_registration.c.status)
Index("ix_fair_registration_worker", fair_registration.c.worker, fair_registration.c.submitted_at)

# --- Applications (issue 15): a worker's application to a vacancy, held by the home and the owner province only ---

# One row per application (domain/application.py). ``worker`` (the token's sub) is known at the home node only
# and never travels; ``open_for`` is the vacancy id while the application has not ended without a hire, null
# after: one unended application of a worker per vacancy (NULLs never collide in a unique constraint).
job_application = Table(
    "job_application",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("home_province", String(6), nullable=False),
    Column("owner_province", String(6), nullable=False),
    Column("vacancy_id", String(40), nullable=False),
    Column("vacancy_title", String(200), nullable=False),
    Column("employer_name", String(200), nullable=False),
    Column("occupation_code", String(10), nullable=False),
    Column("city", String(100), nullable=False),
    Column("worker", String(200), nullable=True),
    Column("open_for", String(40), nullable=True),
    Column("applicant_name", String(50), nullable=False),
    Column("applicant_phone", String(20), nullable=False),
    Column("skills", JSON, nullable=False),
    Column("certificates", JSON, nullable=False),
    Column("experience_years", Integer, nullable=False),
    Column("expected_salary", Integer, nullable=True),
    Column("available_from", Date, nullable=False),
    Column("target_groups", JSON, nullable=False),
    Column("cover_note", Text, nullable=False),
    Column("state", String(20), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("interview_at", DateTime(timezone=True), nullable=True),
    Column("interview_place", String(200), nullable=True),
    Column("offer_salary", Integer, nullable=True),
    Column("offer_start_date", Date, nullable=True),
    Column("hired_at", DateTime(timezone=True), nullable=True),
    Column("reason", Text, nullable=True),
    Column("withdrawal_requested_at", DateTime(timezone=True), nullable=True),  # home: asked of the owner
    Column("updated_at", DateTime(timezone=True), nullable=False),  # when this node last stored it
    UniqueConstraint("worker", "open_for", name="uq_job_application_worker_open_for"),
)
Index("ix_job_application_worker", job_application.c.worker, job_application.c.submitted_at)
Index("ix_job_application_owner_state", job_application.c.owner_province, job_application.c.state)
Index("ix_job_application_home_state", job_application.c.home_province, job_application.c.state)
Index("ix_job_application_vacancy", job_application.c.vacancy_id)

# The timeline of an application: appended, never rewritten
application_entry = Table(
    "application_entry",
    metadata,
    Column("application_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("province", String(6), nullable=False),
    Column("actor", String(220), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("state", String(20), nullable=False),
    Column("note", Text, nullable=True),
    Column("details", JSON, nullable=False),
)

# At the home node, one row per change of a worker's application that landed there: the worker's match stream
# sends it as ``event: application`` (its id is the second half of the stream's event id)
application_notice = Table(
    "application_notice",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("worker", String(200), nullable=False),
    Column("application_id", String(40), nullable=False),
    Column("version", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("vacancy_id", String(40), nullable=False),
    Column("vacancy_title", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)
Index("ix_application_notice_worker", application_notice.c.worker, application_notice.c.id)

# Organised dispatch (domain/dispatch.py) ------------------------------------------------------------------------
# A group transfer of workers, held by its origin and its destination only. The plan's columns are written by the
# origin (``version`` orders them), the arrival's by the destination, once; ``state`` follows from both.
dispatch = Table(
    "dispatch",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("origin_province", String(6), nullable=False),
    Column("destination_province", String(6), nullable=False),
    Column("state", String(12), nullable=False),
    Column("brand_demand_id", String(40), nullable=True),
    Column("fair_id", String(40), nullable=True),
    Column("employers", JSON, nullable=False),
    Column("headcount", Integer, nullable=False),
    Column("transport", String(20), nullable=False),
    Column("departure_at", DateTime(timezone=True), nullable=False),
    Column("departure_place", String(200), nullable=False),
    Column("expected_arrival_on", Date, nullable=False),
    Column("confirmation_due", Date, nullable=False),
    Column("escort_name", String(50), nullable=False),
    Column("escort_phone", String(20), nullable=False),
    Column("note", Text, nullable=True),
    Column("announced_at", DateTime(timezone=True), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
    Column("cancellation_reason", Text, nullable=True),
    Column("arrived_at", DateTime(timezone=True), nullable=True),
    Column("headcount_received", Integer, nullable=True),
    Column("arrival_note", Text, nullable=True),
    Column("arrival_confirmed_at", DateTime(timezone=True), nullable=True),
    Column("arrival_plan_version", Integer, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),  # this node's last write
)
Index("ix_dispatch_origin_state", dispatch.c.origin_province, dispatch.c.state, dispatch.c.id)
Index("ix_dispatch_destination_state", dispatch.c.destination_province, dispatch.c.state, dispatch.c.id)
Index("ix_dispatch_state_due", dispatch.c.state, dispatch.c.confirmation_due)
