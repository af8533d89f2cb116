"""The jobs service's bus contract (``labornet.jobs.contracts.EVENTS``) is what its code writes to the outbox: every
event a vacancy's life causes validates against the JSON Schema of its type's data, on the channel the contract
names, and every listed vacancy type is written. The parts of matchmaking (applications, placements, recruitment
events, dispatches) check every message they write against their own contracts in their own tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import select

from labornet.jobs.app import create_app
from labornet.jobs.contracts import EVENTS
from labornet.jobs.domain.vacancy import CLOSED, EVENT_TYPES, PUBLISHED
from labornet.jobs.entrypoints import applications, dispatches, fairs, placements
from labornet.jobs.service_layer.vacancies import VacancyService
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, outbox, readonly_sessionmaker
from labornet.shared.envelope import Envelope
from labornet.shared.keys import NodeKeys
from labornet.shared.outbox import decode_headers
from labornet.shared.settings import Settings
from labornet.shared.testing import bearer, serving
from labornet.shared.topics import events_topic

VACANCIES = "/api/v1/vacancies"


def draft(days_open: int = 30, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "employer_name": "成都川味餐饮有限公司",
        "employer_credit_code": "91350100M000100Y43",
        "title": "川菜厨师",
        "occupation_code": "5120",
        "division_code": "510104",
        "headcount": 3,
        "salary_min": 6000,
        "salary_max": 9000,
        "employment_type": "full-time",
        "contact": "028-86000000",
        "closing_date": (today_in_china() + timedelta(days=days_open)).isoformat(),
    }
    body.update(overrides)
    return body


async def written(database_url: str) -> list[tuple[str, str | None, Envelope]]:
    """(topic, destination, event) of every row of the node's outbox, in order."""
    engine = create_engine(database_url)
    try:
        async with readonly_sessionmaker(engine)() as session:
            rows = (await session.execute(select(outbox).order_by(outbox.c.id))).all()
    finally:
        await engine.dispose()
    return [
        (row.topic, row.destination, Envelope.from_kafka(row.message_key, row.payload, decode_headers(row.headers)))
        for row in rows
    ]


VACANCY_EVENTS = [contract for contract in EVENTS if contract.type in EVENT_TYPES]


def test_the_contract_lists_each_event_once_the_vacancy_events_first() -> None:
    types = [contract.type for contract in EVENTS]
    assert len(types) == len(set(types))
    assert types[: len(EVENT_TYPES)] == list(EVENT_TYPES)
    assert all(contract.channel == "events" for contract in VACANCY_EVENTS)
    assert all(contract.summary and contract.channel in ("events", "inbox") for contract in EVENTS)
    # the parts' own lists make up the rest, each type once
    parts = [*applications.EVENTS, *placements.EVENTS, *fairs.EVENTS, *dispatches.EVENTS]
    assert types[len(EVENT_TYPES) :] == [contract.type for contract in parts]
    # personal data travels only on inbox channels: applications, registrations and dispatches are directed
    assert {c.channel for c in applications.EVENTS} == {"inbox"}
    assert {c.channel for c in dispatches.EVENTS} == {"inbox"}
    assert {c.channel for c in placements.EVENTS} == {"events"}


async def test_every_event_the_service_writes_validates_against_its_contract(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    officer = bearer(node_keys["510000"], "officer")
    app = create_app(make_settings("510000", "jobs", database_url))
    async with serving(app) as client:
        kept = (await client.post(VACANCIES, json=draft(skills=["川菜"], brand_id=None), headers=officer)).json()
        changed = await client.patch(
            f"{VACANCIES}/{kept['id']}", json={"version": 1, "target_groups": ["veterans"]}, headers=officer
        )
        assert changed.status_code == 200, changed.text
        filled = await client.post(
            f"{VACANCIES}/{kept['id']}/close", json={"reason": "filled", "version": 2}, headers=officer
        )
        assert filled.status_code == 200, filled.text
        short = (await client.post(VACANCIES, json=draft(days_open=0), headers=officer)).json()
        vacancies: VacancyService = app.state.runtime.extras["vacancies"]
        assert await vacancies.expire_due(today=today_in_china() + timedelta(days=1)) == 1

    events = await written(database_url)
    assert [(e.type, e.subject) for _, _, e in events] == [
        (PUBLISHED, kept["id"]),
        ("org.labornet.jobs.vacancy.updated.v1", kept["id"]),
        (CLOSED, kept["id"]),
        (PUBLISHED, short["id"]),
        (CLOSED, short["id"]),
    ]
    contracts = {contract.type: contract for contract in VACANCY_EVENTS}
    validators = {
        kind: Draft202012Validator(c.model.model_json_schema(), format_checker=FormatChecker())
        for kind, c in contracts.items()
    }
    for topic, destination, event in events:
        contract = contracts[event.type]
        assert contract.channel == "events"
        assert (topic, destination) == (events_topic("510000", "jobs"), None)
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validators[event.type].iter_errors(event.json())]
        assert not errors, (event.type, errors)
    assert {event.type for _, _, event in events} == set(contracts), "every vacancy type was written, no other"
    assert [event.json()["status"] for _, _, event in events][-1] == "expired"

    # the schemas tell the types apart: what a publication carries is no update and no close
    published = events[0][2].json()
    assert list(validators["org.labornet.jobs.vacancy.updated.v1"].iter_errors(published))
    assert list(validators[CLOSED].iter_errors(published))
    assert list(validators[PUBLISHED].iter_errors({**published, "salary_min": "6000"}))


@pytest.mark.parametrize("contract", EVENTS, ids=lambda contract: contract.type)
def test_each_contract_schema_is_valid_json_schema(contract: Any) -> None:
    Draft202012Validator.check_schema(contract.model.model_json_schema())
