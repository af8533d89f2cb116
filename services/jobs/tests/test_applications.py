"""Applications across provinces: the rules of the application (pure), the use cases and message handlers of two
provinces on real databases (the bus replaced by carrying each node's outbox to the other by hand, so the tests
choose the order, the duplicates and the forgeries), and the HTTP API of one node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from jsonschema import Draft202012Validator, FormatChecker
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.jobs.adapters import applications as repository
from labornet.jobs.adapters.brands import FixedBrandRegister
from labornet.jobs.adapters.tables import application_entry, application_notice, job_application, placement, vacancy
from labornet.jobs.app import create_app
from labornet.jobs.contracts import EVENTS
from labornet.jobs.domain.application import (
    APPLICANT,
    CHANGED,
    SUBMITTED,
    WITHDRAWAL_REQUESTED,
    Application,
    ApplicationRuleError,
    ApplicationState,
    Interview,
    NoStanding,
    Offer,
    Profile,
    StaleApplication,
    VacancyNotOpen,
    check_open,
    check_sender,
    hire,
    invite,
    make_offer,
    not_selected,
    shortlist,
    submit,
    withdraw,
)
from labornet.jobs.domain.vacancy import CLOSED, UPDATED, Status, VacancyChanges, VacancyDraft, VacancyRecord
from labornet.jobs.entrypoints import applications as applications_api
from labornet.jobs.entrypoints.schemas import APPLICATION_NOTICE_EXAMPLE, ApplicationNotice
from labornet.jobs.service_layer.applications import (
    AlreadyApplied,
    ApplicationService,
    VacancyNotFound,
    VersionRequired,
)
from labornet.jobs.service_layer.vacancies import VacancyService, from_event, to_event
from labornet.shared.clock import today_in_china
from labornet.shared.db import create_engine, sessionmaker
from labornet.shared.divisions import load_divisions
from labornet.shared.envelope import Envelope
from labornet.shared.inbox import RuleViolation
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox
from labornet.shared.problems import Unprocessable
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, generate_private_key, key_id_for
from labornet.shared.testing import assert_problem, bearer, eventually, outbox_events, serving

MIGRATIONS = "labornet.jobs:migrations"
SC, ZJ, CQ = "510000", "330000", "500000"
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
NAME, PHONE = "王小明", "13812345678"


def profile(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": NAME,
        "phone": PHONE,
        "skills": ["川菜", "刀工"],
        "certificates": ["中式烹调师四级"],
        "experience_years": 6,
        "expected_salary": 8000,
        "available_from": (today_in_china() + timedelta(days=7)).isoformat(),
        "target_groups": ["migrant-workers"],
        "cover_note": "在成都做过六年川菜厨师。",
    }
    body.update(overrides)
    return body


def vacancy_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"{ZJ}-V-6F1C2D3E4A5B6C7D8E9F",
        "owner_province": ZJ,
        "title": "川菜厨师",
        "employer_name": "杭州川味餐饮有限公司",
        "occupation_code": "5120",
        "city": "杭州市",
        "status": "open",
        "closing_date": date(2026, 3, 31),
        "headcount": 2,
        "hired": 0,
    }
    row.update(overrides)
    return row


def fresh(**overrides: Any) -> Application:
    return submit(
        Profile.model_validate(profile()),
        application_id=f"{SC}-A-0123456789ABCDEF0123",
        home=SC,
        vacancy=vacancy_row(**overrides),
        at=NOW,
    )


def at(minutes: int) -> datetime:
    return NOW + timedelta(minutes=minutes)


def offered(application: Application) -> Application:
    step = shortlist(application, province=ZJ, actor="officer:zj", at=at(1), expected_version=1, note=None)
    meeting = Interview(at=at(60 * 24), place="杭州市上城区某路 1 号")
    step = invite(step, province=ZJ, actor="officer:zj", at=at(2), expected_version=2, interview=meeting, note=None)
    terms = Offer(salary=8500, start_date=date(2026, 3, 16))
    return make_offer(step, province=ZJ, actor="officer:zj", at=at(3), expected_version=3, offer=terms, note=None)


# The rules ---------------------------------------------------------------------------------------------------


def test_an_application_moves_forward_to_a_hire_with_one_timeline_entry_per_step() -> None:
    application = fresh()
    assert (application.id, application.version, application.state) == (f"{SC}-A-0123456789ABCDEF0123", 1, "received")
    assert (application.home_province, application.owner_province) == (SC, ZJ)
    hired = hire(
        offered(application),
        province=ZJ,
        actor="officer:zj",
        at=at(4),
        expected_version=4,
        vacancy=vacancy_row(hired=1),
        note="已签合同",
    )
    assert (hired.version, hired.state, hired.hired_at) == (5, ApplicationState.HIRED, at(4))
    assert [(e.kind, e.province, e.actor) for e in hired.timeline] == [
        ("submitted", SC, APPLICANT),
        ("shortlisted", ZJ, "officer:zj"),
        ("interview", ZJ, "officer:zj"),
        ("offer", ZJ, "officer:zj"),
        ("hired", ZJ, "officer:zj"),
    ]
    assert hired.offer == Offer(salary=8500, start_date=date(2026, 3, 16))
    assert hired.timeline[2].details == {"at": at(60 * 24).isoformat(), "place": "杭州市上城区某路 1 号"}
    assert application.version == 1, "a transition returns a new value"


def test_moves_go_forward_only_and_a_hire_follows_an_offer() -> None:
    application = fresh()
    meeting = Interview(at=at(60), place="视频面试 https://meeting.example/123")
    interviewed = invite(
        application, province=ZJ, actor="officer:zj", at=at(1), expected_version=1, interview=meeting, note=None
    )
    again = invite(
        interviewed, province=ZJ, actor="officer:zj", at=at(2), expected_version=2, interview=meeting, note="二面"
    )
    assert (again.state, again.version) == (ApplicationState.INTERVIEW, 3), (
        "shortlisting may be skipped, interviews repeated"
    )
    with pytest.raises(ApplicationRuleError, match="cannot go back to shortlisted"):
        shortlist(again, province=ZJ, actor="officer:zj", at=at(3), expected_version=3, note=None)
    with pytest.raises(ApplicationRuleError, match="a hire follows an offer"):
        hire(again, province=ZJ, actor="officer:zj", at=at(3), expected_version=3, vacancy=vacancy_row(), note=None)
    with pytest.raises(ApplicationRuleError, match="start date 2026-03-01 is in the past"):
        make_offer(
            again,
            province=ZJ,
            actor="officer:zj",
            at=at(3),
            expected_version=3,
            offer=Offer(salary=8000, start_date=date(2026, 3, 1)),
            note=None,
        )
    ended = not_selected(again, province=ZJ, actor="officer:zj", at=at(4), expected_version=3, reason="岗位已招满")
    assert (ended.state, ended.reason, ended.final) == (ApplicationState.NOT_SELECTED, "岗位已招满", True)
    with pytest.raises(ApplicationRuleError, match="does not change any more"):
        withdraw(ended, province=ZJ, actor=APPLICANT, at=at(5), expected_version=None, note=None)


def test_only_the_owner_province_moves_an_application_at_the_version_it_read() -> None:
    application = fresh()
    with pytest.raises(NoStanding, match="only its officers move it"):
        shortlist(application, province=SC, actor="officer:sc", at=at(1), expected_version=1, note=None)
    with pytest.raises(StaleApplication, match="is at version 1, not 2"):
        shortlist(application, province=ZJ, actor="officer:zj", at=at(1), expected_version=2, note=None)


@pytest.mark.parametrize(
    ("vacancy", "message"),
    [
        (vacancy_row(hired=2), "no places left: 2 of 2 hired"),
        (vacancy_row(status="withdrawn", hired=0), "is withdrawn; it takes no more hires"),
        (vacancy_row(status="filled", hired=2), "is filled"),
    ],
)
def test_a_hire_takes_a_place_left_of_a_vacancy_still_recruiting(vacancy: dict[str, Any], message: str) -> None:
    with pytest.raises(VacancyNotOpen, match=message):
        hire(
            offered(fresh()), province=ZJ, actor="officer:zj", at=at(4), expected_version=4, vacancy=vacancy, note=None
        )


def test_an_expired_vacancy_still_takes_a_hire_its_closing_date_only_ends_applications() -> None:
    hired = hire(
        offered(fresh()),
        province=ZJ,
        actor="officer:zj",
        at=at(4),
        expected_version=4,
        vacancy=vacancy_row(status="expired"),
        note=None,
    )
    assert hired.state == ApplicationState.HIRED


def test_a_vacancy_takes_applications_while_open_before_its_closing_date_with_places_left() -> None:
    today = date(2026, 3, 2)
    check_open(vacancy_row(), "v", today)
    with pytest.raises(LookupError):
        check_open(None, "v", today)
    with pytest.raises(VacancyNotOpen, match="is filled"):
        check_open(vacancy_row(status="filled"), "v", today)
    with pytest.raises(VacancyNotOpen, match="closed for applications on 2026-03-01"):
        check_open(vacancy_row(closing_date=date(2026, 3, 1)), "v", today)
    with pytest.raises(VacancyNotOpen, match="no places left"):
        check_open(vacancy_row(hired=2), "v", today)


def test_who_may_send_which_version_to_whom() -> None:
    application = fresh()
    check_sender(application, SC, ZJ, None)  # submitted: home → owner
    with pytest.raises(NoStanding, match="not addressed to 500000"):
        check_sender(application, SC, CQ, None)
    with pytest.raises(NoStanding, match="taken by 510000, but 500000 sent it"):
        check_sender(application, CQ, ZJ, None)
    changed = shortlist(application, province=ZJ, actor="officer:zj", at=at(1), expected_version=1, note=None)
    check_sender(changed, ZJ, SC, application)  # changed: owner → home
    with pytest.raises(NoStanding, match="changed by the vacancy's owner"):
        check_sender(changed, ZJ, ZJ, application)
    forged = changed.model_copy(
        update={"timeline": [changed.timeline[0].model_copy(update={"note": "x"}), *changed.timeline[1:]]}
    )
    with pytest.raises(NoStanding, match="rewrites its timeline"):
        check_sender(forged, ZJ, SC, application)
    other_profile = changed.model_copy(
        update={"profile": application.profile.model_copy(update={"phone": "13900000000"})}
    )
    with pytest.raises(NoStanding, match="only the applicant's home province makes the profile"):
        check_sender(other_profile, ZJ, SC, application)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phone", "12345"),
        ("experience_years", -1),
        ("expected_salary", 2_000_000),
        ("target_groups", ["astronauts"]),
        ("name", ""),
        ("cover_note", "长" * 1001),
        ("resident_id", "51160219850412037X"),
    ],
)
def test_a_profile_is_held_to_its_rules(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        Profile.model_validate(profile(**{field: value}))
    assert caught.value.errors()[0]["loc"][0] == field


def test_a_phone_is_read_as_the_rights_service_reads_it() -> None:
    assert Profile.model_validate(profile(phone="+86 138 1234 5678")).phone == "13812345678"
    assert Profile.model_validate(profile(phone="0571-88000000")).phone == "0571-88000000"


def test_a_vacancy_record_never_has_more_hired_than_its_headcount() -> None:
    record = vacancy_record()
    assert VacancyRecord.model_validate(record).hired == 0, "an event of a node without hires reads 0"
    assert VacancyRecord.model_validate({**record, "hired": 2}).hired == 2
    with pytest.raises(ValidationError, match="3 hired is more than its headcount 2"):
        VacancyRecord.model_validate({**record, "hired": 3})


def test_the_hired_count_travels_with_the_vacancy_in_events_and_snapshots() -> None:
    """Events, the anti-entropy snapshot and its digest all use the wire form: the hired count goes through, and
    a record written before there was one (``vacancy_record`` has none) reads 0."""
    row = from_event({**vacancy_record(), "hired": 1})
    assert row["hired"] == 1 and to_event(row)["hired"] == 1
    assert from_event(vacancy_record())["hired"] == 0


def vacancy_record() -> dict[str, Any]:
    return {
        "id": f"{ZJ}-V-1",
        "owner_province": ZJ,
        "employer_name": "杭州川味餐饮有限公司",
        "employer_credit_code": "91350100M000100Y43",
        "title": "川菜厨师",
        "description": "",
        "occupation_code": "5120",
        "occupation_name": "厨师",
        "division_code": "330106",
        "city": "杭州市",
        "headcount": 2,
        "salary_min": 6000,
        "salary_max": 9000,
        "employment_type": "full-time",
        "target_groups": [],
        "skills": [],
        "brand_id": None,
        "contact": "0571-88000000",
        "posted_at": "2026-03-02T01:20:00Z",
        "closing_date": "2026-03-31",
        "status": "open",
        "version": 1,
        "updated_at": "2026-03-02T01:20:00Z",
    }


# Two provinces on real databases -----------------------------------------------------------------------------


@dataclasses.dataclass
class Node:
    province: str
    engine: AsyncEngine
    vacancies: VacancyService
    applications: ApplicationService
    read_to: int = 0

    async def rows(self, table: Any) -> list[dict[str, Any]]:
        async with sessionmaker(self.engine)() as session:
            return [dict(row) for row in (await session.execute(select(table))).mappings()]

    async def count(self, table: Any) -> int:
        async with sessionmaker(self.engine)() as session:
            return int((await session.execute(select(func.count()).select_from(table))).scalar_one())

    async def sent(self) -> list[Envelope]:
        """What this node wrote to its outbox since the last call."""
        envelopes, self.read_to = await outbox_events(self.engine, self.read_to)
        return envelopes

    async def receive(self, envelope: Envelope) -> None:
        """Apply one message or event as the inbox does: in one transaction with its handler."""
        handlers = {**self.applications.handlers()}
        async with sessionmaker(self.engine)() as session, session.begin():
            if envelope.type in handlers:
                await handlers[envelope.type](session, envelope)
            else:
                await self.vacancies.apply_event(session, envelope)

    async def application(self, application_id: str) -> Application:
        async with sessionmaker(self.engine)() as session:
            stored = await repository.load(session, application_id)
        assert stored is not None
        return stored.application


def make_node(province: str, engine: AsyncEngine) -> Node:
    key = generate_private_key()
    outbox = Outbox(province, "jobs", Signer(key_id_for(province, key.public_key()), key))
    vacancies = VacancyService(
        province=province,
        sessions=sessionmaker(engine),
        outbox=outbox,
        divisions=load_divisions(),
        brands=FixedBrandRegister(),
    )
    applications = ApplicationService(
        province=province, sessions=sessionmaker(engine), outbox=outbox, vacancies=vacancies
    )
    return Node(province, engine, vacancies, applications)


@pytest.fixture
async def nodes(new_database_url: Callable[[], Awaitable[str]]) -> AsyncIterator[dict[str, Node]]:
    engines = {}
    for province in (SC, ZJ, CQ):
        engines[province] = create_engine(await new_database_url())
        await upgrade(engines[province], MIGRATIONS)
    try:
        yield {province: make_node(province, engine) for province, engine in engines.items()}
    finally:
        for engine in engines.values():
            await engine.dispose()


def posting(**overrides: Any) -> VacancyDraft:
    body: dict[str, Any] = {
        "employer_name": "杭州川味餐饮有限公司",
        "employer_credit_code": "91350100M000100Y43",
        "title": "川菜厨师",
        "occupation_code": "5120",
        "division_code": "330106",
        "headcount": 2,
        "salary_min": 6000,
        "salary_max": 9000,
        "employment_type": "full-time",
        "contact": "0571-88000000",
        "closing_date": (today_in_china() + timedelta(days=30)).isoformat(),
    }
    body.update(overrides)
    return VacancyDraft.model_validate(body)


async def carry(sender: Node, *receivers: Node) -> list[Envelope]:
    """Deliver what ``sender`` wrote since last time: directed messages to their destination, broadcast events to
    every receiver."""
    envelopes = await sender.sent()
    for envelope in envelopes:
        for receiver in receivers:
            if envelope.destprovince in (None, receiver.province) and not envelope.type.startswith(
                "org.labornet.jobs.placements"
            ):
                await receiver.receive(envelope)
    return envelopes


def assert_contract(envelopes: list[Envelope]) -> None:
    """Every application message is on the inbox channel and valid for its contract's schema."""
    contracts = {contract.type: contract for contract in EVENTS}
    for envelope in envelopes:
        if envelope.type in (SUBMITTED, CHANGED, WITHDRAWAL_REQUESTED):
            contract = contracts[envelope.type]
            assert contract.channel == "inbox" and envelope.destprovince is not None
            validator = Draft202012Validator(contract.model.model_json_schema(), format_checker=FormatChecker())
            assert not [e.message for e in validator.iter_errors(envelope.json())], envelope.type


def messages(received: list[Envelope]) -> list[tuple[str, str | None]]:
    return [(e.type, e.destprovince) for e in received]


def applied(event_type: str, result: str) -> float:
    labels = {"type": event_type, "result": result}
    return REGISTRY.get_sample_value("labornet_jobs_application_messages_total", labels) or 0.0


async def published_vacancy(nodes: dict[str, Node], **overrides: Any) -> dict[str, Any]:
    sc, zj = nodes[SC], nodes[ZJ]
    row = await zj.vacancies.publish(posting(**overrides))
    await carry(zj, sc)
    return row


async def test_a_hire_across_provinces_reaches_home_fills_a_place_and_is_recorded_on_both_sides(
    nodes: dict[str, Node],
) -> None:
    sc, zj, cq = nodes[SC], nodes[ZJ], nodes[CQ]
    posted = await published_vacancy(nodes)
    vacancy_id = posted["id"]

    made = await sc.applications.apply(vacancy_id, Profile.model_validate(profile()), worker="wang")
    application_id = made.application.id
    assert application_id.startswith(f"{SC}-A-") and made.worker == "wang"
    submitted = await carry(sc, zj)
    assert messages(submitted) == [(SUBMITTED, ZJ)]
    assert (await zj.application(application_id)) == made.application
    assert (await zj.rows(job_application))[0]["worker"] is None, "the worker's account stays at home"

    before = applied(SUBMITTED, "stale")
    await zj.receive(submitted[0])  # delivered twice
    assert applied(SUBMITTED, "stale") == before + 1
    assert await zj.count(job_application) == 1 and await zj.count(application_entry) == 1

    await zj.applications.shortlist(application_id, actor="officer:zj", version=1, note=None)
    meeting = Interview(at=datetime.now(UTC) + timedelta(days=1), place="杭州市上城区某路 1 号")
    await zj.applications.invite(application_id, actor="officer:zj", version=2, interview=meeting, note=None)
    terms = Offer(salary=8500, start_date=today_in_china() + timedelta(days=14))
    await zj.applications.offer(application_id, actor="officer:zj", version=3, offer=terms, note=None)
    hired = await zj.applications.hire(application_id, actor="officer:zj", version=4, note="已签合同")
    assert hired.application.state == ApplicationState.HIRED

    sent = await carry(zj, sc)
    assert_contract([*submitted, *sent])
    changes = [e for e in sent if e.type == CHANGED]
    assert [e.json()["version"] for e in changes] == [2, 3, 4, 5] and {e.destprovince for e in changes} == {SC}
    assert [(e.type, e.json()["hired"]) for e in sent if e.type in (UPDATED, CLOSED)] == [(UPDATED, 1)]
    at_home = await sc.application(application_id)
    assert at_home == hired.application
    notices = [(n["worker"], n["version"], n["state"]) for n in await sc.rows(application_notice)]
    assert notices == [("wang", 2, "shortlisted"), ("wang", 3, "interview"), ("wang", 4, "offer"), ("wang", 5, "hired")]
    assert await zj.count(application_notice) == 0, "the owner has no worker to tell"
    for node in (sc, zj):
        [row] = await node.rows(vacancy)
        assert (row["hired"], row["version"], row["status"]) == (1, 2, "open")
        [kept] = await node.rows(placement)
        assert (kept["application_id"], kept["origin_province"], kept["destination_province"]) == (
            application_id,
            SC,
            ZJ,
        )

    # replays and reordered deliveries change nothing; a third province refuses what is not addressed to it
    stale_before = applied(CHANGED, "stale")
    for envelope in reversed(changes):
        await sc.receive(envelope)
    assert applied(CHANGED, "stale") == stale_before + 4
    assert await sc.application(application_id) == at_home and await sc.count(placement) == 1
    assert await sc.count(application_notice) == 4
    for envelope in [*submitted, *changes]:
        with pytest.raises(RuleViolation, match="not addressed to 500000"):
            await cq.receive(envelope)
    assert await cq.count(job_application) == 0

    # a change forged by a third province, or carrying another key, is refused
    forged = dataclasses.replace(changes[-1], originprovince=CQ, id=str(uuid.uuid4()))
    with pytest.raises(RuleViolation, match="but 500000 sent it"):
        await sc.receive(forged)
    rekeyed = dataclasses.replace(changes[-1], partitionkey=f"{SC}-A-FFFFFFFFFFFFFFFFFFFF")
    with pytest.raises(RuleViolation, match="differs from application"):
        await sc.receive(rekeyed)
    home_sent = dataclasses.replace(changes[-1], originprovince=SC)
    with pytest.raises(RuleViolation):
        await sc.receive(home_sent)


async def test_a_hire_beyond_the_open_headcount_changes_nothing_and_the_last_place_fills_the_vacancy(
    nodes: dict[str, Node],
) -> None:
    sc, zj = nodes[SC], nodes[ZJ]
    posted = await published_vacancy(nodes, headcount=2)
    ids = []
    for worker in ("wang", "li", "zhang"):
        made = await sc.applications.apply(posted["id"], Profile.model_validate(profile()), worker=worker)
        ids.append(made.application.id)
    await carry(sc, zj)
    terms = Offer(salary=8000, start_date=today_in_china() + timedelta(days=3))
    for application_id in ids:
        await zj.applications.offer(application_id, actor="officer:zj", version=1, offer=terms, note=None)
    await zj.applications.hire(ids[0], actor="officer:zj", version=2, note=None)
    last = await zj.applications.hire(ids[1], actor="officer:zj", version=2, note=None)
    assert last.application.state == ApplicationState.HIRED
    sent = await carry(zj, sc)
    assert [(e.type, e.json()["hired"], e.json()["status"]) for e in sent if e.type in (UPDATED, CLOSED)] == [
        (UPDATED, 1, "open"),
        (CLOSED, 2, "filled"),
    ]
    entries, vacancies_before = await zj.count(application_entry), await zj.rows(vacancy)
    with pytest.raises(VacancyNotOpen, match="is filled; it takes no more hires"):
        await zj.applications.hire(ids[2], actor="officer:zj", version=2, note=None)
    assert (await zj.application(ids[2])).state == ApplicationState.OFFER
    assert await zj.count(application_entry) == entries and await zj.rows(vacancy) == vacancies_before
    assert await carry(zj, sc) == [], "nothing sent"
    assert [row["status"] for row in await sc.rows(vacancy)] == ["filled"]
    with pytest.raises(VacancyNotOpen, match="is filled; it takes no applications"):
        await sc.applications.apply(posted["id"], Profile.model_validate(profile()), worker="zhao")

    # the sweep answers the offer that can no longer be taken up, and the applicant learns it at home
    assert await zj.applications.answer_ended_vacancies() == 1
    assert await zj.applications.answer_ended_vacancies() == 0
    await carry(zj, sc)
    answered = await sc.application(ids[2])
    assert (answered.state, answered.version, answered.last_entry.actor) == (
        ApplicationState.NOT_SELECTED,
        3,
        "labornet",
    )
    assert answered.reason == f"vacancy closed: vacancy {posted['id']} is filled; it takes no more hires"


async def test_applying_twice_or_to_a_closed_vacancy_is_refused_and_writes_nothing(nodes: dict[str, Node]) -> None:
    sc, zj = nodes[SC], nodes[ZJ]
    posted = await published_vacancy(nodes)
    made = await sc.applications.apply(posted["id"], Profile.model_validate(profile()), worker="wang")
    with pytest.raises(AlreadyApplied, match=f"application {made.application.id} is received") as caught:
        await sc.applications.apply(posted["id"], Profile.model_validate(profile()), worker="wang")
    assert caught.value.application_id == made.application.id
    with pytest.raises(VacancyNotFound):
        await sc.applications.apply(f"{ZJ}-V-NOSUCHVACANCY", Profile.model_validate(profile()), worker="wang")
    assert await sc.count(job_application) == 1
    assert messages(await carry(sc, zj)) == [(SUBMITTED, ZJ)], "the refusals sent nothing"

    # once it ended without a hire, the worker may apply again
    await zj.applications.not_selected(made.application.id, actor="officer:zj", version=1, reason="经验不符")
    await carry(zj, sc)
    again = await sc.applications.apply(posted["id"], Profile.model_validate(profile()), worker="wang")
    assert again.application.id != made.application.id

    await carry(sc, zj)
    closed = await zj.vacancies.close(posted["id"], Status.WITHDRAWN, 1)
    assert closed["status"] == "withdrawn"
    assert await zj.applications.answer_ended_vacancies() == 1, "the open application ends with the vacancy"
    await carry(zj, sc)
    assert (await sc.application(again.application.id)).state == ApplicationState.NOT_SELECTED
    with pytest.raises(VacancyNotOpen, match="is withdrawn; it takes no applications"):
        await sc.applications.apply(posted["id"], Profile.model_validate(profile()), worker="li")
    assert await sc.count(job_application) == 2


async def test_an_application_for_a_vacancy_closed_meanwhile_is_answered_at_once(nodes: dict[str, Node]) -> None:
    sc, zj = nodes[SC], nodes[ZJ]
    posted = await published_vacancy(nodes)
    made = await sc.applications.apply(posted["id"], Profile.model_validate(profile()), worker="wang")
    await zj.vacancies.close(posted["id"], Status.WITHDRAWN, 1)  # before the application arrives
    await zj.sent()
    await carry(sc, zj)
    answered = await zj.application(made.application.id)
    assert (answered.state, answered.version, answered.last_entry.actor) == (
        ApplicationState.NOT_SELECTED,
        2,
        "labornet",
    )
    assert answered.reason is not None and answered.reason.startswith("vacancy closed:")
    await carry(zj, sc)
    assert (await sc.application(made.application.id)).state == ApplicationState.NOT_SELECTED


async def test_a_withdrawal_at_home_is_asked_of_the_owner_and_answered(nodes: dict[str, Node]) -> None:
    sc, zj = nodes[SC], nodes[ZJ]
    posted = await published_vacancy(nodes)
    made = await sc.applications.apply(posted["id"], Profile.model_validate(profile()), worker="wang")
    await carry(sc, zj)
    asked = await sc.applications.withdraw(made.application.id, note="已在本地找到工作")
    assert asked.application.state == ApplicationState.RECEIVED and asked.withdrawal_requested_at is not None
    again = await sc.applications.withdraw(made.application.id, note=None)
    assert again.withdrawal_requested_at == asked.withdrawal_requested_at
    request = await carry(sc, zj)
    assert messages(request) == [(WITHDRAWAL_REQUESTED, ZJ)], "asked once"
    assert_contract(request)
    assert (await zj.application(made.application.id)).state == ApplicationState.WITHDRAWN
    ignored = applied(WITHDRAWAL_REQUESTED, "ignored")
    await zj.receive(dataclasses.replace(request[0], id=str(uuid.uuid4())))  # asked again: already withdrawn
    assert applied(WITHDRAWAL_REQUESTED, "ignored") == ignored + 1
    with pytest.raises(RuleViolation, match="500000 asks to withdraw"):
        await zj.receive(dataclasses.replace(request[0], originprovince=CQ, id=str(uuid.uuid4())))
    with pytest.raises(RuleViolation, match="is not addressed to 500000"):
        await nodes[CQ].receive(request[0])
    await carry(zj, sc)
    home = await sc.rows(job_application)
    assert [(r["state"], r["withdrawal_requested_at"], r["open_for"]) for r in home] == [("withdrawn", None, None)]
    with pytest.raises(ApplicationRuleError, match="is withdrawn; it cannot be withdrawn"):
        await sc.applications.withdraw(made.application.id, note=None)


async def test_steps_need_the_version_and_the_owner_province(nodes: dict[str, Node]) -> None:
    sc, zj = nodes[SC], nodes[ZJ]
    posted = await published_vacancy(nodes)
    made = await sc.applications.apply(posted["id"], Profile.model_validate(profile()), worker="wang")
    await carry(sc, zj)
    with pytest.raises(VersionRequired):
        await zj.applications.shortlist(made.application.id, actor="officer:zj", version=None, note=None)
    with pytest.raises(StaleApplication):
        await zj.applications.shortlist(made.application.id, actor="officer:zj", version=3, note=None)
    with pytest.raises(NoStanding):
        await sc.applications.shortlist(made.application.id, actor="officer:sc", version=1, note=None)
    assert (await zj.application(made.application.id)).version == 1
    assert await zj.sent() == [] and await sc.sent() == []


async def test_the_headcount_of_a_vacancy_stays_above_its_hires(nodes: dict[str, Node]) -> None:
    sc, zj = nodes[SC], nodes[ZJ]
    posted = await published_vacancy(nodes, headcount=3)
    made = await sc.applications.apply(posted["id"], Profile.model_validate(profile()), worker="wang")
    await carry(sc, zj)
    terms = Offer(salary=8000, start_date=today_in_china())
    await zj.applications.offer(made.application.id, actor="officer:zj", version=1, offer=terms, note=None)
    await zj.applications.hire(made.application.id, actor="officer:zj", version=2, note=None)
    with pytest.raises(Unprocessable, match="1 applicants were hired already") as caught:
        await zj.vacancies.update(posted["id"], VacancyChanges(headcount=1), 2)
    assert caught.value.extra["errors"][0]["field"] == "body.headcount"
    assert [(row["headcount"], row["version"]) for row in await zj.rows(vacancy)] == [(3, 2)], "nothing changed"
    changed = await zj.vacancies.update(posted["id"], VacancyChanges(headcount=2), 2)
    assert (changed["headcount"], changed["hired"], to_event(changed)["hired"]) == (2, 1, 1)


async def test_an_application_within_one_province_needs_no_message(nodes: dict[str, Node]) -> None:
    zj = nodes[ZJ]
    posted = await zj.vacancies.publish(posting(headcount=1))
    await zj.sent()
    made = await zj.applications.apply(posted["id"], Profile.model_validate(profile()), worker="chen")
    terms = Offer(salary=8000, start_date=today_in_china())
    await zj.applications.offer(made.application.id, actor="officer:zj", version=1, offer=terms, note=None)
    await zj.applications.hire(made.application.id, actor="officer:zj", version=2, note=None)
    sent = await zj.sent()
    assert not [e for e in sent if e.destprovince is not None], "nothing directed"
    assert [(e.type, e.json()["status"]) for e in sent if e.type in (UPDATED, CLOSED)] == [(CLOSED, "filled")]
    [kept] = await zj.rows(placement)
    assert (kept["origin_province"], kept["destination_province"]) == (ZJ, ZJ)


# The HTTP API of one node --------------------------------------------------------------------------------------


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(ZJ, "jobs", database_url)


def app_of(settings: Settings) -> FastAPI:
    return create_app(settings)


async def test_the_api_of_an_application_within_the_province(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> None:
    settings = make_settings(ZJ, "jobs", database_url, jobs_sweep_interval_s=0.2)  # the gauges follow quickly
    keys = node_keys[ZJ]
    officer, chen, li = (
        bearer(keys, "officer", sub="zj-officer"),
        bearer(keys, "worker", sub="chen"),
        bearer(keys, "worker", sub="li"),
    )
    async with serving(app_of(settings)) as client:
        body = {**vacancy_body(), "headcount": 1}
        posted = (await client.post("/api/v1/vacancies", json=body, headers=officer)).json()
        assert (posted["hired"], posted["open_headcount"]) == (0, 1)
        apply_at = f"/api/v1/vacancies/{posted['id']}/applications"

        assert_problem(await client.post(apply_at, json=profile(), headers=officer), 403, "worker")
        problem = assert_problem(await client.post(apply_at, json=profile(phone="12"), headers=chen), 422)
        assert "phone" in str(problem)
        assert_problem(await client.post(apply_at, json=profile(resident_id="x"), headers=chen), 422)
        assert_problem(
            await client.post("/api/v1/vacancies/330000-V-NONE/applications", json=profile(), headers=chen), 404
        )

        made = await client.post(apply_at, json=profile(), headers=chen)
        assert made.status_code == 201, made.text
        application = made.json()
        location = made.headers["Location"]
        assert location == f"/api/v1/applications/{application['id']}" and made.headers["ETag"] == '"1"'
        assert (application["state"], application["side"], application["profile_masked"]) == ("received", "both", False)
        twice = assert_problem(await client.post(apply_at, json=profile(), headers=chen), 409, application["id"])
        assert twice["application_id"] == application["id"]

        assert (await client.get(location, headers=chen)).json()["timeline"][0]["kind"] == "submitted"
        assert_problem(await client.get(location, headers=li), 404)
        mine = (await client.get("/api/v1/applications", headers=chen)).json()
        assert [item["id"] for item in mine["items"]] == [application["id"]] and mine["next_cursor"] is None
        assert (await client.get("/api/v1/applications", headers=li)).json()["items"] == []
        received = (await client.get("/api/v1/applications", params={"role": "received"}, headers=officer)).json()
        assert [item["profile"]["phone"] for item in received["items"]] == [PHONE]

        step = f"{location}/shortlist"
        assert_problem(await client.post(step, json={}, headers=officer), 428, "version")
        assert_problem(await client.post(step, json={"version": 2}, headers=officer), 409, "version 1, not 2")
        assert_problem(await client.post(step, json={"version": 1}, headers=chen), 403)
        shortlisted = await client.post(step, json={}, headers={**officer, "If-Match": '"1"'})
        assert shortlisted.status_code == 200 and shortlisted.headers["ETag"] == '"2"'
        meeting = {"version": 2, "at": "2026-12-01T10:00:00+08:00", "place": "杭州市上城区某路 1 号"}
        assert (await client.post(f"{location}/interview", json=meeting, headers=officer)).json()[
            "state"
        ] == "interview"
        # read back as the same instant: SQLite keeps a time's wall clock and drops its offset
        invited = (await client.get(location, headers=officer)).json()
        assert datetime.fromisoformat(invited["interview"]["at"]) == datetime.fromisoformat(meeting["at"])
        assert_problem(
            await client.post(f"{location}/hire", json={"version": 3}, headers=officer), 409, "a hire follows an offer"
        )
        offer = {"version": 3, "salary": 8500, "start_date": today_in_china().isoformat()}
        assert (await client.post(f"{location}/offer", json=offer, headers=officer)).json()["offer"]["salary"] == 8500
        hired = await client.post(f"{location}/hire", json={"version": 4}, headers=officer)
        assert hired.status_code == 200, hired.text
        assert (hired.json()["state"], hired.json()["hired_at"] is not None) == ("hired", True)
        filled = (await client.get(f"/api/v1/vacancies/{posted['id']}")).json()
        assert (filled["status"], filled["hired"], filled["open_headcount"], filled["version"]) == ("filled", 1, 0, 2)

        assert_problem(await client.post(apply_at, json=profile(), headers=li), 409, "filled")
        assert_problem(await client.post(f"{location}/withdraw", json={}, headers=chen), 409, "hired")
        assert_problem(await client.post(f"{location}/withdraw", json={}, headers=li), 404)
        assert len((await client.get("/api/v1/applications", headers=li)).json()["items"]) == 0

        # paging, newest first
        second = (await client.post("/api/v1/vacancies", json=vacancy_body(), headers=officer)).json()
        later = (
            await client.post(f"/api/v1/vacancies/{second['id']}/applications", json=profile(), headers=chen)
        ).json()
        first_page = (await client.get("/api/v1/applications", params={"limit": 1}, headers=chen)).json()
        assert [item["id"] for item in first_page["items"]] == [later["id"]]
        second_page = (
            await client.get(
                "/api/v1/applications", params={"limit": 1, "cursor": first_page["next_cursor"]}, headers=chen
            )
        ).json()
        assert [item["id"] for item in second_page["items"]] == [application["id"]] and second_page[
            "next_cursor"
        ] is None
        assert_problem(await client.get("/api/v1/applications", params={"cursor": "garbage"}, headers=chen), 422)
        withdrawn = await client.post(f"/api/v1/applications/{later['id']}/withdraw", json={}, headers=chen)
        assert (withdrawn.status_code, withdrawn.json()["state"]) == (200, "withdrawn")

        # both roles on one node: the hired application and the withdrawn one, sent and received
        held = [
            f'labornet_jobs_applications{{role="{role}",state="{state}"}} 1.0'
            for role in ("sent", "received")
            for state in ("hired", "withdrawn")
        ]

        async def counted() -> bool:
            metrics = (await client.get("/metrics")).text
            return all(line in metrics for line in held)

        await eventually(counted, timeout_s=10)
        metrics = (await client.get("/metrics")).text
        assert 'labornet_jobs_applications{role="received",state="received"} 0.0' in metrics
        assert 'labornet_jobs_application_changes_total{kind="hired"}' in metrics


def vacancy_body() -> dict[str, Any]:
    return {
        "employer_name": "杭州川味餐饮有限公司",
        "employer_credit_code": "91350100M000100Y43",
        "title": "川菜厨师",
        "occupation_code": "5120",
        "division_code": "330106",
        "headcount": 2,
        "salary_min": 6000,
        "salary_max": 9000,
        "employment_type": "full-time",
        "contact": "0571-88000000",
        "closing_date": (today_in_china() + timedelta(days=30)).isoformat(),
    }


# The match stream tells the worker -----------------------------------------------------------------------------


async def sse_events(lines: AsyncIterator[str], count: int, timeout_s: float = 10) -> list[dict[str, Any]]:
    """The next ``count`` events of a stream (comments and the opening ``retry``/``id`` skipped)."""
    found: list[dict[str, Any]] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(timeout_s):
        async for line in lines:
            if line == "":
                if "data" in current:
                    found.append({**current, "data": json.loads(current["data"])})
                    if len(found) == count:
                        return found
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
    raise AssertionError(f"the stream ended after {found}")


async def test_the_match_stream_sends_each_change_of_the_workers_applications_and_resumes(
    settings: Settings, node_keys: dict[str, NodeKeys]
) -> None:
    keys = node_keys[ZJ]
    officer, chen, li = (
        bearer(keys, "officer", sub="zj-officer"),
        bearer(keys, "worker", sub="chen"),
        bearer(keys, "worker", sub="li"),
    )
    stream = "/api/v1/me/matches/stream"
    async with serving(app_of(settings)) as client:
        posted = (await client.post("/api/v1/vacancies", json=vacancy_body(), headers=officer)).json()
        made = (
            await client.post(f"/api/v1/vacancies/{posted['id']}/applications", json=profile(), headers=chen)
        ).json()
        location = f"/api/v1/applications/{made['id']}"
        async with client.stream("GET", stream, headers=chen) as response:
            lines = response.aiter_lines()
            assert [await anext(lines) for _ in range(3)] == ["retry: 1000", "id: 0", ""], "no notice yet: as before"
            await client.post(f"{location}/shortlist", json={"version": 1}, headers=officer)
            [shortlisted] = await sse_events(lines, 1)
        assert shortlisted["event"] == "application"
        notice = shortlisted["data"]
        assert (notice["application_id"], notice["version"], notice["state"]) == (made["id"], 2, "shortlisted")
        assert shortlisted["id"] == f"0:{notice['id']}" and notice["vacancy_title"] == "川菜厨师"

        # while disconnected: an offer and a withdrawal; resuming from the last id sent misses neither
        offer = {"version": 2, "salary": 8000, "start_date": today_in_china().isoformat()}
        await client.post(f"{location}/offer", json=offer, headers=officer)
        await client.post(f"{location}/withdraw", json={}, headers=chen)
        async with client.stream("GET", stream, headers={**chen, "Last-Event-ID": shortlisted["id"]}) as response:
            resumed = await sse_events(response.aiter_lines(), 2)
        assert [(e["data"]["version"], e["data"]["state"]) for e in resumed] == [(3, "offer"), (4, "withdrawn")]
        assert [e["id"] for e in resumed] == [f"0:{e['data']['id']}" for e in resumed]

        # a client that only ever saw matches resumes with a bare match id: every notice comes
        async with client.stream("GET", stream, headers={**chen, "Last-Event-ID": "0"}) as response:
            everything = await sse_events(response.aiter_lines(), 3)
        assert [e["data"]["state"] for e in everything] == ["shortlisted", "offer", "withdrawn"]

        # another worker's stream has none of it; a malformed id is a 422
        async with client.stream("GET", stream, headers={**li, "Last-Event-ID": "0:0"}) as response:
            lines = response.aiter_lines()
            assert [await anext(lines) for _ in range(2)] == ["retry: 1000", "id: 0"]
        for bad in ("0:x", "1:2:3", ":5", "-1"):
            assert_problem(await client.get(stream, headers={**chen, "Last-Event-ID": bad}), 422, "Last-Event-ID")


# The contracts: the HTTP document and the bus --------------------------------------------------------------------

PROBLEM_JSON = "application/problem+json"
APPLICATION_SCHEMAS = [
    "ApplicationView",
    "ApplicationSummary",
    "ApplicationPage",
    "ApplicationDraft",
]


def test_every_application_operation_documents_a_typed_answer_and_its_problems(settings: Settings) -> None:
    spec = app_of(settings).openapi()
    operations = [
        (method.lower(), route.path)
        for route in applications_api.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    ]
    assert len(operations) == 10
    for method, path in operations:
        responses = spec["paths"][path][method]["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert success, (method, path)
        for code in success:
            [(media, body)] = responses[code]["content"].items()
            assert media == "application/json" and "$ref" in body["schema"], (method, path, code)
        problems = [code for code in responses if code[0] in "45"]
        assert {"401", "403"} <= set(problems), (method, path)
        for problem in problems:
            assert responses[problem]["content"][PROBLEM_JSON]["schema"] == {
                "$ref": "#/components/schemas/ProblemDetails"
            }, (method, path, problem)
    for name in APPLICATION_SCHEMAS:
        examples = spec["components"]["schemas"][name]["examples"]
        validator = Draft202012Validator(
            {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}, format_checker=FormatChecker()
        )
        for example in examples:
            assert not [e.message for e in validator.iter_errors(example)], name
    notice = Draft202012Validator(ApplicationNotice.model_json_schema(), format_checker=FormatChecker())
    assert not [e.message for e in notice.iter_errors(APPLICATION_NOTICE_EXAMPLE)], "the stream's notice example"
    assert spec["components"]["schemas"]["ApplicationState"]["enum"] == [state.value for state in ApplicationState]


def conforms(spec: dict[str, Any], response: httpx.Response, method: str, path: str) -> Any:
    """The answer's status is documented and its body valid for the documented schema."""
    documented = spec["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, (method, path, response.status_code)
    media = response.headers["content-type"].split(";")[0]
    schema = documented[str(response.status_code)]["content"][media]["schema"]
    validator = Draft202012Validator(
        {"allOf": [schema], "components": spec["components"]}, format_checker=FormatChecker()
    )
    body = response.json()
    assert not [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)], (method, path)
    return body


async def test_real_answers_match_the_document(settings: Settings, node_keys: dict[str, NodeKeys]) -> None:
    keys = node_keys[ZJ]
    officer, chen = bearer(keys, "officer", sub="zj-officer"), bearer(keys, "worker", sub="chen")
    app = app_of(settings)
    spec = app.openapi()
    one = "/api/v1/applications/{application_id}"
    async with serving(app) as client:
        posted = (await client.post("/api/v1/vacancies", json=vacancy_body(), headers=officer)).json()
        apply_path = "/api/v1/vacancies/{vacancy_id}/applications"
        made = conforms(
            spec,
            await client.post(f"/api/v1/vacancies/{posted['id']}/applications", json=profile(), headers=chen),
            "post",
            apply_path,
        )
        again = await client.post(f"/api/v1/vacancies/{posted['id']}/applications", json=profile(), headers=chen)
        conforms(spec, again, "post", apply_path)
        location = f"/api/v1/applications/{made['id']}"
        conforms(spec, await client.get(location, headers=chen), "get", one)
        conforms(spec, await client.get(location, headers=bearer(keys, "worker", sub="li")), "get", one)
        for params in ({}, {"role": "received"}, {"role": "sent", "state": "received"}):
            headers = officer if params else chen
            conforms(
                spec,
                await client.get("/api/v1/applications", params=params, headers=headers),
                "get",
                "/api/v1/applications",
            )
        steps: list[tuple[str, dict[str, Any]]] = [
            ("shortlist", {"version": 1}),
            ("shortlist", {"version": 2}),
            ("interview", {"version": 2, "at": "2026-12-01T10:00:00+08:00", "place": "杭州"}),
            ("offer", {"version": 3}),
            ("offer", {"version": 3, "salary": 8000, "start_date": today_in_china().isoformat()}),
            ("hire", {}),
            ("hire", {"version": 4}),
            ("not-selected", {"version": 5, "reason": "x"}),
            ("withdrawn", {"version": 5}),
        ]
        for action, body in steps:
            conforms(
                spec, await client.post(f"{location}/{action}", json=body, headers=officer), "post", f"{one}/{action}"
            )
        conforms(spec, await client.post(f"{location}/withdraw", json={}, headers=chen), "post", f"{one}/withdraw")
