"""Precise push: record which subscriptions a vacancy matches, inside the transaction that changed the vacancy.

:func:`match_vacancy` runs every time a vacancy row is inserted or changed on a node — a local publish, update or
close, or a partner's event applied to the replica — in the same transaction, so a match exists exactly when the
vacancy change does. A (subscription, vacancy) pair is matched once, ever: the unique constraint and
``ON CONFLICT DO NOTHING`` make repeated calls and concurrent replicas harmless, and a later update of the
vacancy only refreshes the version and status the worker sees, never notifies twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from labornet.jobs.adapters.tables import match, subscription, webhook_delivery
from labornet.jobs.adapters.tables import vacancy as vacancy_table
from labornet.jobs.adapters.webhooks import wake_after_commit
from labornet.jobs.domain.subscriptions import (
    CriteriaIndex,
    SubscriptionCriteria,
    matches,
    significant_prefix,
    vacancy_matcher,
)
from labornet.jobs.domain.vacancy import Status
from labornet.jobs.metrics import MATCHES
from labornet.shared.db import for_each_dialect, on_commit, utcnow
from labornet.shared.direct import Direct

# what a webhook receives about the vacancy (no employer identifiers, no contact: the worker opens the vacancy)
WEBHOOK_VACANCY_FIELDS = (
    "id",
    "title",
    "owner_province",
    "city",
    "salary_min",
    "salary_max",
    "employment_type",
    "closing_date",
    "status",
    "version",
)


def criteria_of(values: Mapping[str, Any]) -> SubscriptionCriteria:
    """The criteria of a stored subscription (validated when it was created, so not validated again)."""
    return SubscriptionCriteria.model_construct(
        occupation_codes=values["occupation_codes"],
        provinces=values["provinces"],
        division_codes=values["division_codes"],
        min_salary=values["min_salary"],
        keywords=values["keywords"],
        target_group=values["target_group"],
    )


def webhook_payload(match_id: int, subscription_id: str, vacancy: Mapping[str, Any]) -> dict[str, Any]:
    summary = {name: vacancy[name] for name in WEBHOOK_VACANCY_FIELDS}
    if isinstance(summary["closing_date"], date):
        summary["closing_date"] = summary["closing_date"].isoformat()
    return {"match_id": match_id, "subscription_id": subscription_id, "vacancy": summary}


async def match_vacancy(
    session: AsyncSession,
    vacancy: Mapping[str, Any],
    *,
    now: datetime | None = None,
    subscription_id: str | None = None,
) -> list[int]:
    """Record the matches of ``vacancy`` (a mapping with the ``vacancy`` table's columns) in the caller's transaction.

    * Every active subscription that matches and has no match for this vacancy yet gets one, and a webhook delivery
      if it has a webhook URL. Returns the ids of the new matches.
    * Existing matches of this vacancy take its version and status (a closed vacancy shows as closed), unless they
      already show a newer version.

    ``subscription_id`` narrows both steps to one subscription (used when a subscription is created).
    """
    return await match_vacancies(session, [vacancy], now=now, subscription_id=subscription_id)


async def match_vacancies(
    session: AsyncSession,
    vacancies: Sequence[Mapping[str, Any]],
    *,
    now: datetime | None = None,
    subscription_id: str | None = None,
    new: bool = False,
) -> list[int]:
    """:func:`match_vacancy` for several vacancies (distinct ids) at once, in a fixed number of statements: the
    matches they already have, the active subscriptions that may accept any of them, one insert of the new matches
    and one of their webhook deliveries, and a refresh of the existing matches (only of vacancies that have some).
    The result is the same as matching them one after the other; new match ids follow the order of ``vacancies``.
    """
    if not vacancies:
        return []
    now = now or utcnow()
    ids = [row["id"] for row in vacancies]
    existing: set[tuple[str, str]] = set()
    if not new:
        parameters: dict[str, Any] = {"vacancy_ids": ids}
        if subscription_id is not None:
            parameters["subscription_id"] = subscription_id
        found = await _EXISTING_MATCHES[subscription_id is not None].execute(session, parameters)
        existing = {(row["subscription_id"], row["vacancy_id"]) for row in found.rows}
    matched_vacancies = {vacancy_id for _, vacancy_id in existing}
    refreshed = [row for row in vacancies if row["id"] in matched_vacancies]
    if refreshed:
        refresh = (
            update(match)
            .where(
                match.c.vacancy_id == bindparam("b_id"),
                match.c.vacancy_version <= bindparam("b_version"),
            )
            .values(vacancy_version=bindparam("b_version"), vacancy_status=bindparam("b_status"), updated_at=now)
        )
        if subscription_id is not None:
            refresh = refresh.where(match.c.subscription_id == subscription_id)
        await session.execute(
            refresh,
            [{"b_id": row["id"], "b_version": row["version"], "b_status": row["status"]} for row in refreshed],
        )
    open_vacancies = [row for row in vacancies if row["status"] == Status.OPEN]
    if not open_vacancies:
        return []

    # each vacancy is tested against the subscriptions for its province and occupation only
    subscribed = await _candidates(session, open_vacancies, subscription_id)
    index = CriteriaIndex((row, criteria_of(row)) for row in subscribed)
    pairs: list[tuple[Any, Mapping[str, Any]]] = []
    for vacancy in open_vacancies:
        accepts, vacancy_id = vacancy_matcher(vacancy), vacancy["id"]
        pairs.extend(
            (row, vacancy)
            for row, criteria in index.candidates(vacancy)
            if accepts(criteria) and (row["id"], vacancy_id) not in existing
        )
    if not pairs:
        return []

    rows = [
        {
            "subscription_id": row["id"],
            "worker": row["worker"],
            "vacancy_id": vacancy["id"],
            "vacancy_version": vacancy["version"],
            "vacancy_status": vacancy["status"],
            "matched_at": now,
            "updated_at": now,
        }
        for row, vacancy in pairs
    ]
    inserted = await session.execute(_INSERT_MATCHES[session.get_bind().dialect.name], rows)
    created = {(sub_id, vacancy_id): match_id for match_id, sub_id, vacancy_id in inserted}

    deliveries = [
        {
            "match_id": created[row["id"], vacancy["id"]],
            "subscription_id": row["id"],
            "payload": webhook_payload(created[row["id"], vacancy["id"]], row["id"], vacancy),
            "attempts": 0,
            "next_attempt_at": now,
        }
        for row, vacancy in pairs
        if row["webhook_url"] and (row["id"], vacancy["id"]) in created
    ]
    if deliveries:
        await session.execute(insert(webhook_delivery), deliveries)
        wake_after_commit(session)
    if created:  # counted once the matches are durable: a handler rolled back and retried would count them twice
        by_owner = Counter(vacancy["owner_province"] for row, vacancy in pairs if (row["id"], vacancy["id"]) in created)
        on_commit(session, lambda: _count_matches(by_owner))
    return sorted(created.values())


def _count_matches(by_owner: Counter[str]) -> None:
    for owner, count in by_owner.items():
        MATCHES.labels(owner).inc(count)


async def match_open_vacancies(
    session: AsyncSession,
    subscription_id: str,
    criteria: SubscriptionCriteria,
    *,
    limit: int,
    now: datetime | None = None,
) -> list[int]:
    """Match a new subscription against the open vacancies already in the replica; return the new match ids.

    Bounded on purpose: only the ``limit`` most recently posted open vacancies that pass the criteria cheap to check
    in SQL are looked at, so creating a subscription stays a short transaction however large the replica is.
    Later vacancy changes reach the subscription through :func:`match_vacancy` as usual.
    """
    query = select(vacancy_table).where(vacancy_table.c.status == Status.OPEN.value)
    if criteria.provinces:
        query = query.where(vacancy_table.c.owner_province.in_(criteria.provinces))
    if criteria.min_salary is not None:
        query = query.where(vacancy_table.c.salary_max >= criteria.min_salary)
    if criteria.occupation_codes:
        query = query.where(
            or_(*(vacancy_table.c.occupation_code.startswith(code) for code in criteria.occupation_codes))
        )
    if criteria.division_codes:
        prefixes = (significant_prefix(code) for code in criteria.division_codes)
        query = query.where(or_(*(vacancy_table.c.division_code.startswith(prefix) for prefix in prefixes)))
    query = query.order_by(vacancy_table.c.posted_at.desc(), vacancy_table.c.id.desc()).limit(limit)
    created: list[int] = []
    # oldest first, so that match ids (the order a worker's list shows) follow the posting order
    for row in reversed((await session.execute(query)).all()):
        candidate = row._asdict()
        if matches(criteria, candidate):
            created += await match_vacancy(session, candidate, now=now, subscription_id=subscription_id)
    return created


async def _candidates(
    session: AsyncSession, vacancies: Sequence[Mapping[str, Any]], subscription_id: str | None
) -> Sequence[Any]:
    """Active subscriptions that may accept one of ``vacancies`` by the criteria cheap to check in SQL (salary and
    target group); each pair is checked again in Python with the list criteria (prefixes, provinces, keywords),
    which is simpler than dialect-specific JSON queries and fast for thousands of rows."""
    target_groups = sorted({str(group) for row in vacancies for group in row.get("target_groups") or ()})
    parameters: dict[str, Any] = {"salary_max": max(row["salary_max"] for row in vacancies)}
    if target_groups:
        parameters["target_groups"] = target_groups
    if subscription_id is not None:
        parameters["subscription_id"] = subscription_id
    query = _CANDIDATES[bool(target_groups), subscription_id is not None]
    return (await query.execute(session, parameters)).rows


def _existing_matches_query(one_subscription: bool) -> Direct:
    query = select(match.c.subscription_id, match.c.vacancy_id).where(
        match.c.vacancy_id.in_(bindparam("vacancy_ids", expanding=True))
    )
    # run on the driver (ADR 38)
    return Direct(query.where(match.c.subscription_id == bindparam("subscription_id")) if one_subscription else query)


# the matches the vacancies of a run already have (of every subscription, or of one)
_EXISTING_MATCHES = {one: _existing_matches_query(one) for one in (False, True)}


def _candidates_query(with_target_groups: bool, one_subscription: bool) -> Direct:
    query = select(subscription).where(
        subscription.c.active.is_(True),
        or_(subscription.c.min_salary.is_(None), subscription.c.min_salary <= bindparam("salary_max")),
        or_(
            subscription.c.target_group.is_(None),
            subscription.c.target_group.in_(bindparam("target_groups", expanding=True)),
        )
        if with_target_groups
        else subscription.c.target_group.is_(None),
    )
    # run on the driver (ADR 38)
    return Direct(query.where(subscription.c.id == bindparam("subscription_id")) if one_subscription else query)


# The new matches, those already there left alone; their ids are returned
_INSERT_MATCHES = for_each_dialect(
    lambda insert: (
        insert(match)
        .on_conflict_do_nothing(index_elements=[match.c.subscription_id, match.c.vacancy_id])
        .returning(match.c.id, match.c.subscription_id, match.c.vacancy_id)
    )
)

# built once (every vacancy published or replicated is matched): with or without target groups, for every
# subscription or one
_CANDIDATES = {(groups, one): _candidates_query(groups, one) for groups in (False, True) for one in (False, True)}
