"""Joint recruitment events: the rules of an event, its listings and registrations (domain), the use cases and the
handlers between an organiser (Chongqing) and a co-organiser (Sichuan) on real databases with the bus replaced by
reading the outbox, and the HTTP API of one node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from labornet.jobs.adapters.brands import FixedBrandRegister
from labornet.jobs.adapters.tables import fair_registration, recruitment_fair, recruitment_fair_listing
from labornet.jobs.app import create_app
from labornet.jobs.domain import fair as rules
from labornet.jobs.domain.fair import (
    CANCELLED,
    LISTING,
    PUBLISHED,
    REGISTRATION,
    REGISTRATION_ANSWERED,
    REGISTRATION_CANCELLED,
    STATISTICS,
    UPDATED,
    Fair,
    FairChanges,
    FairDraft,
    FairRuleError,
    FairStatus,
    InvalidFair,
    NotOrganiser,
    Outcomes,
    RefusalReason,
    RegistrationDraft,
    RegistrationMessage,
    StaleVersion,
    VersionRequired,
    end_of_day,
)
from labornet.jobs.domain.vacancy import Status as VacancyStatus
from labornet.jobs.domain.vacancy import VacancyDraft
from labornet.jobs.entrypoints.fairs import EVENTS as FAIR_CONTRACTS
from labornet.jobs.service_layer.fairs import AlreadyRegistered, FairService
from labornet.jobs.service_layer.vacancies import VacancyService
from labornet.shared.clock import CHINA
from labornet.shared.db import create_engine, sessionmaker
from labornet.shared.divisions import load_divisions
from labornet.shared.envelope import Envelope, encode_data, new_event_id
from labornet.shared.inbox import RuleViolation
from labornet.shared.keys import NodeKeys
from labornet.shared.migrations import upgrade
from labornet.shared.outbox import Outbox
from labornet.shared.provinces import load_registry
from labornet.shared.settings import Settings
from labornet.shared.signing import Signer, generate_private_key, key_id_for
from labornet.shared.testing import assert_problem, bearer, outbox_events, serving

MIGRATIONS = "labornet.jobs:migrations"
SC, ZJ, CQ = "510000", "330000", "500000"
MEMBERS = load_registry().codes()
NOW = datetime(2027, 1, 5, 2, 0, tzinfo=UTC)  # 10:00 in China
START = date(2027, 2, 10)


def draft(**overrides: Any) -> FairDraft:
    body: dict[str, Any] = {
        "title": "2027 春风行动 川渝劳务协作专场招聘会",
        "campaign": "spring-breeze-action",
        "co_organisers": [SC],
        "mode": "venue",
        "venue": {"division_code": "500103", "address": "重庆市渝中区人力资源市场一楼"},
        "starts_on": START.isoformat(),
        "ends_on": (START + timedelta(days=2)).isoformat(),
    }
    body.update(overrides)
    return FairDraft.model_validate(body)


def opened(at: datetime = NOW, **overrides: Any) -> Fair:
    return rules.open_fair(draft(**overrides), fair_id=rules.new_fair_id(CQ), organiser=CQ, members=MEMBERS, at=at)


def during(fair: Fair, day: int = 0) -> datetime:
    """10:00 in China on day ``day`` of the event."""
    return datetime.combine(fair.starts_on + timedelta(days=day), datetime.min.time(), tzinfo=CHINA) + timedelta(
        hours=10
    )


# The event's rules ---------------------------------------------------------------------------------------------


def test_an_event_opens_scheduled_with_registration_closing_at_the_end_of_its_last_day() -> None:
    fair = opened()
    assert (fair.version, fair.status, fair.organiser_province, fair.provinces) == (
        1,
        FairStatus.SCHEDULED,
        CQ,
        [CQ, SC],
    )
    assert fair.id.startswith(f"{CQ}-F-") and len(fair.id.split("-F-")[1]) == 20
    # the end of 12 February in China is 16:00 UTC that day
    assert fair.registration_closes_at == datetime(2027, 2, 12, 16, 0, tzinfo=UTC)
    assert fair.phase(date(2027, 2, 9)) == "upcoming"
    assert fair.phase(date(2027, 2, 12)) == "ongoing"
    assert fair.phase(date(2027, 2, 13)) == "past"
    assert fair.registration_open(datetime(2027, 2, 12, 15, 59, tzinfo=UTC))
    assert not fair.registration_open(datetime(2027, 2, 12, 16, 0, tzinfo=UTC))
    assert rules.event_type_of(fair) == PUBLISHED


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ends_on": "2027-02-09"}, "before starts_on"),
        ({"ends_on": "2027-06-30"}, "at most 92 days"),
        ({"mode": "online", "url": None, "venue": None}, "online event has a url"),
        ({"mode": "venue", "venue": None}, "venue event has a venue"),
        ({"co_organisers": [SC, SC]}, "twice"),
        ({"registration_closes_at": "2027-02-13T00:00:01+08:00"}, "after the event's last day"),
        ({"capacity": 0}, "greater than or equal to 1"),
        ({"campaign": "summer-fun"}, "spring-breeze-action"),
    ],
)
def test_a_draft_that_breaks_the_rules_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        draft(**overrides)


def test_the_federation_and_the_calendar_are_checked_when_the_event_opens() -> None:
    with pytest.raises(InvalidFair) as refused:
        opened(co_organisers=[SC, "110000", CQ])
    assert [e["field"] for e in refused.value.errors] == ["co_organisers.1", "co_organisers.2"]
    assert "not a member" in refused.value.errors[0]["message"]
    assert "organiser itself" in refused.value.errors[1]["message"]
    with pytest.raises(InvalidFair, match="starts_on: 2027-01-04 is past"):
        opened(starts_on="2027-01-04", ends_on="2027-01-06")
    with pytest.raises(InvalidFair, match="more than 366 days"):
        opened(starts_on="2028-03-01", ends_on="2028-03-02")
    with pytest.raises(InvalidFair, match="registration_closes_at: 2027-01-05T01:00:00"):
        opened(registration_closes_at="2027-01-05T09:00:00+08:00")


def test_the_organiser_changes_a_scheduled_event_naming_its_version() -> None:
    fair = opened()
    changes = FairChanges(ends_on=date(2027, 2, 13), capacity=500)
    with pytest.raises(VersionRequired):
        rules.update_fair(fair, changes, province=CQ, members=MEMBERS, at=NOW, version=None)
    with pytest.raises(StaleVersion, match="version 1, not 2"):
        rules.update_fair(fair, changes, province=CQ, members=MEMBERS, at=NOW, version=2)
    with pytest.raises(NotOrganiser):
        rules.update_fair(fair, changes, province=SC, members=MEMBERS, at=NOW, version=1)
    changed = rules.update_fair(fair, changes, province=CQ, members=MEMBERS, at=NOW, version=1)
    assert (changed.version, changed.capacity, changed.ends_on) == (2, 500, date(2027, 2, 13))
    assert changed.registration_closes_at == end_of_day(date(2027, 2, 13)), "a default close follows the last day"
    assert rules.event_type_of(changed) == UPDATED
    online = rules.update_fair(
        changed,
        FairChanges(mode="online", url="https://zph.example.cn/2027"),
        province=CQ,
        members=MEMBERS,
        at=NOW,
        version=2,
    )
    assert (online.mode, online.venue) == ("online", None)
    with pytest.raises(ValidationError, match="hires 5 is more than intentions_reached 3"):
        Outcomes(employers_attending=1, intentions_reached=3, hires=5)
    after_the_end = end_of_day(changed.ends_on)
    with pytest.raises(FairRuleError, match="ended"):
        rules.update_fair(changed, FairChanges(title="x"), province=CQ, members=MEMBERS, at=after_the_end, version=2)
    with pytest.raises(FairRuleError, match="ended"):
        rules.cancel_fair(changed, province=CQ, at=after_the_end, version=2, reason="weather")


def test_cancelling_and_recording_outcomes() -> None:
    fair = opened()
    outcomes = Outcomes(employers_attending=120, intentions_reached=860, hires=310)
    with pytest.raises(FairRuleError, match="outcomes come after"):
        rules.record_outcomes(fair, outcomes, province=CQ, at=NOW, version=None)
    with pytest.raises(NotOrganiser):
        rules.record_outcomes(fair, outcomes, province=SC, at=during(fair), version=None)
    concluded = rules.record_outcomes(fair, outcomes, province=CQ, at=during(fair, 2), version=1)
    assert (concluded.status, concluded.version, concluded.outcomes and concluded.outcomes.hires) == (
        FairStatus.CONCLUDED,
        2,
        310,
    )
    corrected = rules.record_outcomes(
        concluded, outcomes.model_copy(update={"hires": 312}), province=CQ, at=during(fair, 3), version=None
    )
    assert corrected.outcomes is not None and corrected.outcomes.hires == 312 and corrected.version == 3
    with pytest.raises(FairRuleError, match="only a scheduled event"):
        rules.update_fair(concluded, FairChanges(title="x"), province=CQ, members=MEMBERS, at=during(fair), version=2)
    cancelled = rules.cancel_fair(fair, province=CQ, at=NOW, version=1, reason="暴雪预警")
    assert (cancelled.status, cancelled.cancel_reason, rules.event_type_of(cancelled)) == (
        FairStatus.CANCELLED,
        "暴雪预警",
        CANCELLED,
    )
    with pytest.raises(FairRuleError, match="cancelled"):
        rules.record_outcomes(cancelled, outcomes, province=CQ, at=during(fair), version=None)
    with pytest.raises(ValueError, match="cannot carry"):
        rules.check_replicated(UPDATED, cancelled)


def test_listings_and_registrations_follow_the_event() -> None:
    fair = opened(capacity=2)
    with pytest.raises(NotOrganiser, match="neither organises"):
        rules.new_listing(fair, None, [], province=ZJ, at=NOW, version=None)
    listing = rules.new_listing(fair, None, [f"{SC}-V-ABC"], province=SC, at=NOW, version=None)
    assert (listing.version, listing.fair_version, listing.province) == (1, 1, SC)
    with pytest.raises(StaleVersion):
        rules.new_listing(fair, listing, [], province=SC, at=NOW, version=3)
    assert rules.new_listing(fair, listing, [], province=SC, at=NOW, version=None).version == 2
    with pytest.raises(ValidationError, match="vacancies of others"):
        listing.model_validate({**listing.model_dump(), "vacancy_ids": [f"{ZJ}-V-ABC"]})

    message = RegistrationMessage(
        id=rules.new_registration_id(SC),
        fair_id=fair.id,
        organiser_province=CQ,
        home_province=SC,
        name="王小明",
        phone="138 1234 5678",
        occupations=["7112"],
        submitted_at=fair.registration_closes_at - timedelta(seconds=1),
    )
    assert message.phone == "13812345678"
    assert rules.answer_registration(fair, message, accepted=0) is None, "submitted in time: accepted, late or not"
    late = message.model_copy(update={"submitted_at": fair.registration_closes_at})
    assert rules.answer_registration(fair, late, accepted=0) == RefusalReason.CLOSED
    assert rules.answer_registration(fair, message, accepted=2) == RefusalReason.FULL
    cancelled = rules.cancel_fair(fair, province=CQ, at=NOW, version=1, reason="x")
    assert rules.answer_registration(cancelled, message, accepted=0) == RefusalReason.CANCELLED
    with pytest.raises(FairRuleError, match="full"):
        rules.check_registration(fair, at=NOW, taken=2)
    with pytest.raises(FairRuleError, match="closed"):
        rules.check_registration(fair, at=fair.registration_closes_at, taken=0)
    with pytest.raises(ValidationError, match="phone number"):
        RegistrationDraft(name="王小明", phone="12345")
    with pytest.raises(ValidationError, match="ISCO-08"):
        RegistrationDraft(name="王小明", phone="13812345678", occupations=["99999"])


# Use cases and handlers on real databases ----------------------------------------------------------------------


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Node:
    province: str
    engine: AsyncEngine
    fairs: FairService
    vacancies: VacancyService
    clock: Clock
    read: int = 0  # the last outbox row passed on
    seen: list[Envelope] = field(default_factory=list)

    async def sent(self) -> list[Envelope]:
        """What this node wrote to its outbox since the last call."""
        envelopes, self.read = await outbox_events(self.engine, self.read)
        self.seen += envelopes
        return envelopes

    async def apply(self, envelope: Envelope) -> None:
        handlers = {**self.fairs.broadcast_handlers(), **self.fairs.inbox_handlers()}
        if envelope.type.startswith("org.labornet.jobs.vacancy."):
            handler = self.vacancies.apply_event
        else:
            handler = handlers[envelope.type]
        async with sessionmaker(self.engine)() as session, session.begin():
            await handler(session, envelope)

    async def count(self, table: Any, *where: Any) -> int:
        async with sessionmaker(self.engine)() as session:
            return int((await session.execute(select(func.count()).select_from(table).where(*where))).scalar_one())


async def deliver(sender: Node, *receivers: Node) -> list[Envelope]:
    """Pass on what ``sender`` wrote: broadcasts to every receiver, directed messages to their destination."""
    envelopes = await sender.sent()
    for envelope in envelopes:
        for receiver in receivers:
            if envelope.destprovince in (None, receiver.province):
                await receiver.apply(envelope)
    return envelopes


@pytest.fixture
async def nodes(new_database_url: Callable[[], Awaitable[str]]) -> AsyncIterator[dict[str, Node]]:
    made: dict[str, Node] = {}
    for province in (CQ, SC, ZJ):
        engine = create_engine(await new_database_url())
        await upgrade(engine, MIGRATIONS)
        key = generate_private_key()
        writer = Outbox(province, "jobs", Signer(key_id_for(province, key.public_key()), key))
        clock = Clock()
        made[province] = Node(
            province,
            engine,
            FairService(
                province=province,
                members=MEMBERS,
                sessions=sessionmaker(engine),
                outbox=writer,
                divisions=load_divisions(),
                clock=clock,
            ),
            VacancyService(
                province=province,
                sessions=sessionmaker(engine),
                outbox=writer,
                divisions=load_divisions(),
                brands=FixedBrandRegister(),
            ),
            clock,
        )
    yield made
    for node in made.values():
        await node.engine.dispose()


def forged(
    sent: Envelope, *, origin: str, data: Any = None, event_type: str | None = None, key: str | None = None
) -> Envelope:
    """``sent`` as if ``origin`` had sent it (a new event id), with other data, type or key if given."""
    return Envelope(
        id=new_event_id(),
        source=f"/labornet/{origin}/jobs",
        type=event_type or sent.type,
        time=sent.time,
        partitionkey=key or sent.partitionkey,
        originprovince=origin,
        stream=sent.stream,
        streamseq=sent.streamseq,
        schemaversion=1,
        data=encode_data(data) if data is not None else sent.data,
        subject=sent.subject,
        destprovince=sent.destprovince,
    )


def vacancy_draft(division: str, **overrides: Any) -> VacancyDraft:
    body: dict[str, Any] = {
        "employer_name": "重庆某建设工程有限公司",
        "employer_credit_code": "91350100M000100Y43",
        "title": "钢筋工",
        "occupation_code": "7114",
        "division_code": division,
        "headcount": 20,
        "salary_min": 7000,
        "salary_max": 9000,
        "employment_type": "full-time",
        "contact": "023-60000000",
        "closing_date": (date.today() + timedelta(days=60)).isoformat(),
    }
    body.update(overrides)
    return VacancyDraft.model_validate(body)


async def test_an_event_between_organiser_and_co_organiser(nodes: dict[str, Node]) -> None:
    cq, sc, zj = nodes[CQ], nodes[SC], nodes[ZJ]
    stored = await cq.fairs.create(draft(capacity=3))
    fair = stored.fair
    [published] = await deliver(cq, sc, zj)
    assert (published.type, published.partitionkey, published.destprovince) == (PUBLISHED, fair.id, None)
    for node in (sc, zj):
        assert await node.count(recruitment_fair, recruitment_fair.c.id == fair.id) == 1

    # Sichuan lists one of its open vacancies; a closed one, Chongqing's and an unknown one are named and refused
    own = await sc.vacancies.publish(vacancy_draft("510104"))
    closed = await sc.vacancies.publish(vacancy_draft("510104", title="木工"))
    await sc.vacancies.close(closed["id"], VacancyStatus.WITHDRAWN, closed["version"])
    theirs = await cq.vacancies.publish(vacancy_draft("500103"))
    await deliver(cq, sc, zj)
    await deliver(sc, cq, zj)
    refused_ids = [closed["id"], theirs["id"], f"{SC}-V-NOSUCHVACANCY"]
    with pytest.raises(InvalidFair) as refused:
        await sc.fairs.list_vacancies(fair.id, [own["id"], *refused_ids], None)
    assert [e["field"] for e in refused.value.errors] == ["vacancy_ids.1", "vacancy_ids.2", "vacancy_ids.3"]
    assert "withdrawn" in refused.value.errors[0]["message"] and CQ in refused.value.errors[1]["message"]
    assert await sc.count(recruitment_fair_listing) == 0 and await sc.sent() == []
    with pytest.raises(NotOrganiser):
        await zj.fairs.list_vacancies(fair.id, [], None)

    listing = await sc.fairs.list_vacancies(fair.id, [own["id"]], None)
    [listed] = await deliver(sc, cq, zj)
    assert listed.type == LISTING and listing.fair_version == 1
    for node in (cq, zj):
        assert await node.count(recruitment_fair_listing, recruitment_fair_listing.c.province == SC) == 1
    await cq.apply(listed)  # a duplicate changes nothing
    assert await cq.count(recruitment_fair_listing) == 1

    # a listing of a province that does not organise the event is refused; one before its event is retried
    zj_listing = listing.model_copy(update={"province": ZJ, "vacancy_ids": []})
    with pytest.raises(RuleViolation, match="does not organise"):
        await cq.apply(forged(listed, origin=ZJ, data=zj_listing))
    with pytest.raises(RuleViolation, match="sent the listing of"):
        await cq.apply(forged(listed, origin=ZJ))
    early = listing.model_copy(update={"fair_id": rules.new_fair_id(CQ)})
    with pytest.raises(LookupError, match="retried"):
        await zj.apply(forged(listed, origin=SC, data=early, key=early.fair_id))

    # an event changed by anyone but its organiser is refused, a replayed older version changes nothing
    changed = await cq.fairs.update(fair.id, FairChanges(title="川渝春风行动招聘会"), version=1)
    [update] = await deliver(cq, sc, zj)
    with pytest.raises(RuleViolation, match="organised by 500000"):
        await zj.apply(forged(update, origin=SC, data=changed.fair.model_copy(update={"version": 9})))
    await sc.apply(forged(published, origin=CQ))
    async with sessionmaker(sc.engine)() as session:
        title = (await session.execute(select(recruitment_fair.c.title))).scalar_one()
    assert title == "川渝春风行动招聘会"

    # two Sichuan workers register at home; the organiser takes them and answers; one registers twice
    first = await sc.fairs.register(fair.id, "wang", RegistrationDraft(name="王小明", phone="13812345678"))
    second = await sc.fairs.register(fair.id, "li", RegistrationDraft(name="李四", phone="13912345678"))
    assert first["status"] == second["status"] == "submitted"
    with pytest.raises(AlreadyRegistered):
        await sc.fairs.register(fair.id, "wang", RegistrationDraft(name="王小明", phone="13812345678"))
    messages = await deliver(sc, cq, zj)
    assert [m.type for m in messages] == [REGISTRATION, REGISTRATION] and {m.destprovince for m in messages} == {CQ}
    assert await zj.count(fair_registration) == 0
    assert await cq.count(fair_registration, fair_registration.c.status == "accepted") == 2
    await cq.apply(messages[0])  # delivered again
    await cq.apply(forged(messages[0], origin=SC))  # re-sent under a new event id
    assert await cq.count(fair_registration) == 2
    with pytest.raises(RuleViolation, match="registration made in 510000"):
        await cq.apply(forged(messages[0], origin=ZJ))
    answers = await deliver(cq, sc, zj)
    assert [a.type for a in answers] == [REGISTRATION_ANSWERED] * 2 and {a.destprovince for a in answers} == {SC}
    assert await sc.count(fair_registration, fair_registration.c.status == "accepted") == 2
    with pytest.raises(RuleViolation, match="organised by 500000"):
        await sc.apply(forged(answers[0], origin=ZJ))

    # the counts go out when due, anonymous, and every node keeps them
    assert await cq.fairs.publish_due_statistics() == 1
    [statistics] = await deliver(cq, sc, zj)
    assert statistics.type == STATISTICS and "王小明" not in statistics.data.decode()
    assert await cq.fairs.publish_due_statistics() == 0
    async with sessionmaker(zj.engine)() as session:
        counts = (await session.execute(select(recruitment_fair.c.registration_counts))).scalar_one()
    assert counts == [{"home_province": SC, "accepted": 2, "refused": 0, "cancelled": 0}]
    with pytest.raises(RuleViolation, match="statistics of 500000"):
        await zj.apply(forged(statistics, origin=SC))

    # Li cancels; the organiser learns it; Wang may not register a second time, a third worker fills the event
    await sc.fairs.cancel_registration(second["id"], "li")
    [cancellation] = await deliver(sc, cq, zj)
    assert cancellation.type == REGISTRATION_CANCELLED
    assert await cq.count(fair_registration, fair_registration.c.status == "cancelled") == 1
    await cq.apply(forged(cancellation, origin=SC))  # again: nothing more
    with pytest.raises(RuleViolation, match="made in 510000"):
        await cq.apply(forged(cancellation, origin=ZJ))
    assert await cq.count(fair_registration, fair_registration.c.status == "cancelled") == 1

    # a registration submitted after the close is refused by the organiser even if the home let it through
    sc.clock.now = fair.registration_closes_at
    before = await sc.count(fair_registration)
    with pytest.raises(FairRuleError, match="closed"):
        await sc.fairs.register(fair.id, "zhao", RegistrationDraft(name="赵六", phone="13712345678"))
    assert await sc.count(fair_registration) == before and await sc.sent() == []
    with pytest.raises(FairRuleError, match="ended"):
        await sc.fairs.cancel_registration(first["id"], "wang")
    assert await sc.count(fair_registration, fair_registration.c.status == "accepted") == 1
    late = RegistrationMessage.model_validate(
        {**messages[0].json(), "id": rules.new_registration_id(SC), "submitted_at": fair.registration_closes_at}
    )
    cq.clock.now = fair.registration_closes_at + timedelta(hours=1)
    await cq.apply(forged(messages[0], origin=SC, data=late, key=late.id))
    async with sessionmaker(cq.engine)() as session:
        row = (await session.execute(select(fair_registration).where(fair_registration.c.id == late.id))).one()
    assert (row.status, row.reason) == ("refused", "registration-closed")
    # and one submitted before the close that arrives after it is accepted
    in_time = late.model_copy(update={"id": rules.new_registration_id(SC), "submitted_at": NOW})
    await cq.apply(forged(messages[0], origin=SC, data=in_time, key=in_time.id))
    assert (
        await cq.count(
            fair_registration, fair_registration.c.id == in_time.id, fair_registration.c.status == "accepted"
        )
        == 1
    )


async def test_registration_at_the_organisers_own_node_and_capacity(nodes: dict[str, Node]) -> None:
    cq, sc = nodes[CQ], nodes[SC]
    fair = (await cq.fairs.create(draft(capacity=2))).fair
    await deliver(cq, sc)
    first = await cq.fairs.register(fair.id, "zhang", RegistrationDraft(name="张三", phone="13812345678"))
    assert first["status"] == "accepted", "the organiser's own worker is taken at once"
    # Sichuan knows one place is taken once the counts arrive, and its own worker takes the last one
    await cq.fairs.publish_due_statistics()
    await deliver(cq, sc)
    await sc.fairs.register(fair.id, "wang", RegistrationDraft(name="王小明", phone="13912345678"))
    with pytest.raises(FairRuleError, match="full: 2 registrations for 2 places"):
        await sc.fairs.register(fair.id, "li", RegistrationDraft(name="李四", phone="13712345678"))
    # the organiser refuses what would go beyond its capacity, whatever the home believed
    await cq.fairs.register(fair.id, "chen", RegistrationDraft(name="陈七", phone="13612345678"))
    await deliver(sc, cq)
    async with sessionmaker(cq.engine)() as session:
        row = (await session.execute(select(fair_registration).where(fair_registration.c.home_province == SC))).one()
    assert (row.status, row.reason) == ("refused", "capacity-full")
    await deliver(cq, sc)
    async with sessionmaker(sc.engine)() as session:
        home = (await session.execute(select(fair_registration))).one()
    assert (home.status, home.reason, home.active_fair) == ("refused", "capacity-full", None)
    # a refused registration frees the worker to try again later; a cancelled event takes none
    cancelled = await cq.fairs.cancel(fair.id, 1, "场地调整")
    assert cancelled.fair.status == "cancelled"
    await deliver(cq, sc)
    with pytest.raises(FairRuleError, match="cancelled"):
        await sc.fairs.register(fair.id, "wang2", RegistrationDraft(name="王五", phone="13512345678"))
    with pytest.raises(FairRuleError, match="only a scheduled event is cancelled"):
        await cq.fairs.cancel(fair.id, 2, "again")


async def test_outcomes_publish_the_counts_and_the_rebroadcast_changes_nothing(nodes: dict[str, Node]) -> None:
    cq, sc = nodes[CQ], nodes[SC]
    fair = (await cq.fairs.create(draft())).fair
    await deliver(cq, sc)
    with pytest.raises(FairRuleError, match="outcomes come after"):
        await cq.fairs.record_outcomes(fair.id, Outcomes(employers_attending=1, intentions_reached=1, hires=1), None)
    cq.clock.now = during(fair, 1)
    concluded = await cq.fairs.record_outcomes(
        fair.id, Outcomes(employers_attending=120, intentions_reached=860, hires=310), None
    )
    assert concluded.statistics_generation == 1
    sent = await deliver(cq, sc)
    assert [e.type for e in sent] == ["org.labornet.jobs.fair.outcomes-recorded.v1", STATISTICS]
    assert await cq.fairs.rebroadcast() == 1
    again = await deliver(cq, sc)
    assert [e.type for e in again] == ["org.labornet.jobs.fair.outcomes-recorded.v1", STATISTICS]
    async with sessionmaker(sc.engine)() as session:
        row = (await session.execute(select(recruitment_fair))).one()
    assert (row.status, row.version, row.statistics_generation, row.outcomes["hires"]) == ("concluded", 2, 1, 310)


async def test_every_event_written_validates_against_its_contract(nodes: dict[str, Node]) -> None:
    """Each of the part's nine types is written by some step, on the channel its contract names, and its data
    validates against the contract's JSON Schema."""
    cq, sc = nodes[CQ], nodes[SC]
    fair = (await cq.fairs.create(draft())).fair
    doomed = (await cq.fairs.create(draft(co_organisers=[]))).fair
    await deliver(cq, sc)
    await cq.fairs.update(fair.id, FairChanges(capacity=10), version=1)
    await cq.fairs.cancel(doomed.id, 1, "场地调整")
    await deliver(cq, sc)
    vacancy = await sc.vacancies.publish(vacancy_draft("510104"))
    await sc.fairs.list_vacancies(fair.id, [vacancy["id"]], None)
    registration = await sc.fairs.register(fair.id, "wang", RegistrationDraft(name="王小明", phone="13812345678"))
    await deliver(sc, cq)
    await deliver(cq, sc)
    await sc.fairs.cancel_registration(registration["id"], "wang")
    await deliver(sc, cq)
    cq.clock.now = during(fair)
    await cq.fairs.record_outcomes(fair.id, Outcomes(employers_attending=3, intentions_reached=2, hires=1), None)
    await deliver(cq, sc)

    contracts = {contract.type: contract for contract in FAIR_CONTRACTS}
    written = [e for e in cq.seen + sc.seen if not e.type.startswith("org.labornet.jobs.vacancy.")]
    assert {e.type for e in written} == set(contracts), "every listed type was written, no other"
    for envelope in written:
        contract = contracts[envelope.type]
        assert contract.channel == ("events" if envelope.destprovince is None else "inbox"), envelope.type
        validator = Draft202012Validator(contract.model.model_json_schema(), format_checker=FormatChecker())
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(envelope.json())]
        assert not errors, (envelope.type, errors)
    # the schemas tell the event's types apart: a cancellation is no update
    cancelled = next(e for e in written if e.type == CANCELLED).json()
    update_schema = Draft202012Validator(contracts[UPDATED].model.model_json_schema())
    assert not update_schema.is_valid(cancelled)


# HTTP ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(CQ, "jobs", database_url)


def body(**overrides: Any) -> dict[str, Any]:
    start = date.today() + timedelta(days=10)
    made: dict[str, Any] = {
        "title": "春风行动专场招聘会",
        "campaign": "spring-breeze-action",
        "co_organisers": [SC],
        "mode": "venue",
        "venue": {"division_code": "500103", "address": "渝中区人力资源市场"},
        "starts_on": start.isoformat(),
        "ends_on": (start + timedelta(days=1)).isoformat(),
    }
    made.update(overrides)
    return made


async def test_the_http_api_of_one_node(settings: Settings, node_keys: dict[str, NodeKeys]) -> None:
    officer = bearer(node_keys[CQ], "officer", sub="officer-cq")
    worker = bearer(node_keys[CQ], "worker", sub="zhang")
    async with serving(create_app(settings)) as client:
        assert_problem(await client.post("/api/v1/fairs", json=body()), 401)
        assert_problem(await client.post("/api/v1/fairs", json=body(), headers=worker), 403)
        bad = assert_problem(
            await client.post(
                "/api/v1/fairs",
                json=body(co_organisers=["110000"], venue={"division_code": "510104", "address": "x"}),
                headers=officer,
            ),
            422,
        )
        assert [e["field"] for e in bad["errors"]] == ["co_organisers.0", "venue.division_code"]
        assert_problem(await client.post("/api/v1/fairs", json=body(co_organisers=[SC, SC]), headers=officer), 422)
        assert await events_in(settings.database_url) == 0, "a refused event is not written"

        created = await client.post("/api/v1/fairs", json=body(capacity=100), headers=officer)
        assert created.status_code == 201, created.text
        fair = created.json()
        assert created.headers["ETag"] == '"1"' and created.headers["Location"] == f"/api/v1/fairs/{fair['id']}"
        assert (fair["phase"], fair["registration_open"], fair["listings"]) == ("upcoming", True, [])
        other = (
            await client.post(
                "/api/v1/fairs", json=body(campaign="graduate-special", co_organisers=[]), headers=officer
            )
        ).json()

        listed = (await client.get("/api/v1/fairs", params={"campaign": "spring-breeze-action"})).json()
        assert [item["id"] for item in listed["items"]] == [fair["id"]]
        by_sichuan = (await client.get("/api/v1/fairs", params={"province": SC})).json()
        assert [item["id"] for item in by_sichuan["items"]] == [fair["id"]]
        page = (await client.get("/api/v1/fairs", params={"limit": 1})).json()
        assert page["next_cursor"] is not None
        rest = (await client.get("/api/v1/fairs", params={"limit": 1, "cursor": page["next_cursor"]})).json()
        assert {page["items"][0]["id"], rest["items"][0]["id"]} == {fair["id"], other["id"]}
        assert_problem(await client.get("/api/v1/fairs", params={"cursor": "nonsense"}), 422)
        assert (await client.get("/api/v1/fairs", params={"phase": "past"})).json()["items"] == []

        location = f"/api/v1/fairs/{fair['id']}"
        assert_problem(await client.patch(location, json={"title": "新标题"}, headers=officer), 428)
        assert_problem(
            await client.patch(location, json={"title": "新标题"}, headers={**officer, "If-Match": '"7"'}), 409
        )
        changed = await client.patch(location, json={"title": "新标题"}, headers={**officer, "If-Match": '"1"'})
        assert changed.status_code == 200 and changed.json()["version"] == 2 and changed.headers["ETag"] == '"2"'
        assert_problem(await client.patch(location, json={"ends_on": "2020-01-01", "version": 2}, headers=officer), 422)
        assert_problem(
            await client.post(
                f"{location}/outcomes",
                json={"employers_attending": 1, "intentions_reached": 1, "hires": 1},
                headers=officer,
            ),
            409,
            "outcomes come after",
        )
        assert_problem(
            await client.post(
                f"{location}/outcomes",
                json={"employers_attending": 1, "intentions_reached": 1, "hires": 2},
                headers=officer,
            ),
            422,
        )

        # registrations of this province's own workers for this province's event
        registration = {"name": "张三", "phone": "13812345678", "occupations": ["7112"]}
        made = await client.post(f"{location}/registrations", json=registration, headers=worker)
        assert made.status_code == 201, made.text
        assert made.json()["status"] == "accepted" and made.json()["fair_title"] == "新标题"
        assert_problem(
            await client.post(f"{location}/registrations", json=registration, headers=worker), 409, "already"
        )
        assert_problem(
            await client.post(
                f"{location}/registrations",
                json={**registration, "phone": "1"},
                headers=bearer(node_keys[CQ], "worker", sub="li"),
            ),
            422,
        )
        assert_problem(
            await client.post(
                "/api/v1/fairs/500000-F-00000000000000000000/registrations", json=registration, headers=worker
            ),
            404,
        )
        mine = (await client.get("/api/v1/fairs/registrations", headers=worker)).json()["items"]
        assert [(item["id"], item["fair_status"]) for item in mine] == [(made.json()["id"], "scheduled")]
        seen = (await client.get(f"{location}/registrations", headers=officer)).json()["items"]
        assert [(item["name"], item["phone"]) for item in seen] == [("张三", "13812345678")]
        assert_problem(await client.get(f"{location}/registrations", headers=worker), 403)
        cancelled = await client.post(f"/api/v1/fairs/registrations/{made.json()['id']}/cancel", headers=worker)
        assert cancelled.json()["status"] == "cancelled"
        assert_problem(
            await client.post(f"/api/v1/fairs/registrations/{made.json()['id']}/cancel", headers=worker), 409
        )
        assert_problem(
            await client.post(
                f"/api/v1/fairs/registrations/{made.json()['id']}/cancel",
                headers=bearer(node_keys[CQ], "worker", sub="li"),
            ),
            404,
        )

        # vacancies: none of another province, an event this province does not organise is a 403
        assert_problem(
            await client.put(f"{location}/vacancies", json={"vacancy_ids": [f"{CQ}-V-ABC"]}, headers=officer),
            422,
            "no vacancy",
        )
        listing = await client.put(f"{location}/vacancies", json={"vacancy_ids": []}, headers=officer)
        assert listing.status_code == 200 and listing.json()["version"] == 1

        cancel = await client.post(f"{location}/cancel", json={"reason": "场地调整", "version": 2}, headers=officer)
        assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
        assert_problem(
            await client.post(f"{location}/registrations", json=registration, headers=worker), 409, "cancelled"
        )
        assert_problem(await client.get("/api/v1/fairs/500000-F-00000000000000000000"), 404)


async def events_in(database_url: str) -> int:
    """How many recruitment events a node's database holds."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(select(func.count()).select_from(recruitment_fair))).scalar_one())
    finally:
        await engine.dispose()
