"""The rules of a rights case without any infrastructure: what may be filed, the steps, and the time limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from labornet.rights.domain.case import (
    COMPLAINANT,
    Case,
    CaseDraft,
    CaseRuleError,
    ClosureReason,
    Deadlines,
    EntryKind,
    NotCaseHolder,
    Overdue,
    Status,
    WorkPlace,
    accept,
    close,
    decline,
    escalate,
    escalated,
    extend,
    message_type,
    officer,
    open_case,
    overdue,
    recipients,
    record_update,
    redacted,
    refer,
    resolve,
)
from labornet.shared.identifiers import make_resident_id
from labornet.shared.workdays import Calendars, Days

SC, JS, CQ = "510000", "320000", "500000"
WORKER_ID = make_resident_id("511602", date(1985, 4, 12), 37)
# A fixed calendar (not the official one): 1-7 October 2026 off, Sunday 27 September and Saturday 10 October worked.
NATIONAL_DAY_DAYS = Days(
    frozenset(date(2026, 10, d) for d in range(1, 8)), frozenset({date(2026, 9, 27), date(2026, 10, 10)})
)
NATIONAL_DAY = Calendars(NATIONAL_DAY_DAYS, official=False)
WEEKDAYS = Calendars(official=False)
DEADLINES = Deadlines(NATIONAL_DAY)
FILED = datetime(2026, 9, 28, 2, 0, tzinfo=UTC)  # Monday 10:00 in Beijing


def draft(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "complainant": {"name": "王小明", "phone": "13812345678"},
        "category": "wage-arrears",
        "sector": "construction",
        "employer": {
            "name": "南京某建设工程有限公司",
            "credit_code": "91350100M000100Y43",
            "address": "南京市江宁区某路 1 号",
            "province": JS,
        },
        "work_place": {"division_code": "320115", "site": "江宁某小区项目"},
        "period": {"start": "2025-03-01", "end": "2025-12-31"},
        "amount_owed": "48600.00",
        "workers_affected": 12,
        "evidence": [{"name": "考勤表.pdf", "sha256": "ab" * 32, "size": 20480}],
        "facts": "工程完工后拖欠十个月工资。",
    }
    body.update(overrides)
    return body


def filed_case(*, at: datetime = FILED, deadlines: Deadlines = DEADLINES, **overrides: Any) -> Case:
    return open_case(
        CaseDraft.model_validate(draft(**overrides)),
        case_id="510000-R-TEST",
        home=SC,
        resident_id=WORKER_ID,
        work_place_name="南京市",
        actor=COMPLAINANT,
        at=at,
        deadlines=deadlines,
    )


# Filing: what is accepted and what a 422 says ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "location", "message"),
    [
        ({"evidence": [{"name": "x", "sha256": "ab" * 31, "size": 1}]}, ("evidence", 0, "sha256"), "64 hexadecimal"),
        ({"evidence": [{"name": "x", "sha256": "zz" * 32, "size": 1}]}, ("evidence", 0, "sha256"), "64 hexadecimal"),
        ({"evidence": [{"name": "x", "sha256": "ab" * 32, "size": 0}]}, ("evidence", 0, "size"), "greater than 0"),
        (
            {
                "evidence": [
                    {"name": "a", "sha256": "ab" * 32, "size": 1},
                    {"name": "b", "sha256": "AB" * 32, "size": 2},
                ]
            },
            (),
            "listed twice",
        ),
        ({"period": {"start": "2025-12-01", "end": "2025-03-01"}}, ("period",), "before its start"),
        ({"period": {"start": "2025-01-01", "end": "2099-01-01"}}, ("period",), "in the future"),
        ({"amount_owed": "0"}, ("amount_owed",), "greater than 0"),
        ({"amount_owed": "12.345"}, ("amount_owed",), "2 decimal places"),
        ({"amount_owed": "100000000.01"}, ("amount_owed",), "less than or equal to 100000000"),
        ({"workers_affected": 0}, ("workers_affected",), "greater than or equal to 1"),
        ({"category": "unpaid-bonus"}, ("category",), "wage-arrears"),
        ({"sector": "farming"}, ("sector",), "construction"),
        ({"employer": {**draft()["employer"], "credit_code": "91350100M000100Y44"}}, ("employer", "credit_code"), "3"),
        ({"employer": {**draft()["employer"], "province": "320100"}}, ("employer", "province"), "ending in 0000"),
        ({"work_place": {"division_code": "3201"}}, ("work_place", "division_code"), "expected 6 digits"),
        ({"complainant": {"name": "王小明", "phone": "12345"}}, ("complainant", "phone"), "mobile number"),
        (
            {"complainant": {"name": "王小明", "phone": "13812345678", "resident_id": "11010519491231002Y"}},
            ("complainant", "resident_id"),
            "check character",
        ),
        ({"complainant": {"name": "", "phone": "13812345678"}}, ("complainant", "name"), "at least 1 character"),
        ({"facts": "长" * 5001}, ("facts",), "at most 5000"),
        ({"surprise": 1}, ("surprise",), "Extra inputs"),
    ],
)
def test_a_bad_filing_names_the_field(changes: dict[str, Any], location: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CaseDraft.model_validate(draft(**changes))
    [error] = caught.value.errors()
    assert error["loc"] == location
    assert message in error["msg"]


def test_values_are_normalised() -> None:
    parsed = CaseDraft.model_validate(
        draft(
            complainant={"name": " 王小明 ", "phone": "+86 138 1234 5678"},
            evidence=[{"name": "工资条.jpg", "sha256": "AB" * 32, "size": 5}],
            amount_owed=1200.5,
        )
    )
    assert (parsed.complainant.name, parsed.complainant.phone) == ("王小明", "13812345678")
    assert parsed.evidence[0].sha256 == "ab" * 32
    assert str(parsed.amount_owed) == "1200.50"
    assert CaseDraft.model_validate(draft(complainant={"name": "李", "phone": "028-86000000"})).complainant.phone
    assert CaseDraft.model_validate({k: v for k, v in draft().items() if k != "category"}).category == "wage-arrears"


# Time limits ----------------------------------------------------------------------------------------------------


def test_acceptance_is_due_five_working_days_after_the_referral() -> None:
    # filed Monday 28 Sept (the day itself does not count): Tue 29, Wed 30, (1-7 Oct holidays), Thu 8, Fri 9 and
    # the make-up working day Saturday 10 October is the fifth
    assert DEADLINES.acceptance_due(FILED, JS) == date(2026, 10, 10)
    assert Deadlines(WEEKDAYS).acceptance_due(FILED, JS) == date(2026, 10, 5)  # without the holidays


def test_the_investigation_takes_sixty_working_days_and_one_extension_of_thirty() -> None:
    accepted_at = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)  # Monday
    due = DEADLINES.investigation_due(accepted_at, JS)
    assert due == date(2027, 1, 25)  # 12 weeks of 5 working days: Monday + 12 weeks
    assert NATIONAL_DAY.of(JS).workdays_between(accepted_at, due) == 60
    assert DEADLINES.extended(due, JS) == date(2027, 3, 8)
    assert NATIONAL_DAY.of(JS).workdays_between(due, DEADLINES.extended(due, JS)) == 30
    custom = Deadlines(WEEKDAYS, acceptance_days=3, investigation_days=10, extension_days=5)
    assert custom.investigation_due(accepted_at, JS) == date(2026, 11, 16)


def test_days_are_counted_in_china() -> None:
    sunday_evening_utc = datetime(2026, 11, 22, 17, 0, tzinfo=UTC)  # Monday 01:00 in Beijing
    assert Deadlines(WEEKDAYS).acceptance_due(sunday_evening_utc, JS) == date(2026, 11, 30)


def test_a_case_is_overdue_after_its_last_allowed_day() -> None:
    case = filed_case()
    assert case.acceptance_due == date(2026, 10, 10)
    assert overdue(case, date(2026, 10, 10)) is None
    assert overdue(case, date(2026, 10, 11)) == Overdue.ACCEPTANCE
    taken = accept(
        case, province=JS, actor=officer("js"), at=FILED + timedelta(days=11), deadlines=DEADLINES, note=None
    )
    assert overdue(taken, date(2026, 10, 11)) is None
    assert taken.investigation_due is not None
    assert overdue(taken, taken.investigation_due + timedelta(days=1)) == Overdue.INVESTIGATION
    done = resolve(
        taken,
        province=JS,
        actor=officer("js"),
        at=FILED + timedelta(days=20),
        amount_recovered=Decimal("48600"),
        workers_paid=12,
        note=None,
    )
    assert overdue(done, date(2030, 1, 1)) is None


# Steps -----------------------------------------------------------------------------------------------------------


def test_filing_refers_the_case_to_the_province_of_the_work_place() -> None:
    case = filed_case()
    assert (case.home_province, case.handling_province, case.holder) == (SC, JS, JS)
    assert (case.status, case.version, case.work_place_name) == (Status.REFERRED, 1, "南京市")
    assert [(e.seq, e.kind, e.province) for e in case.timeline] == [(1, "filed", SC), (2, "referred", SC)]
    assert case.timeline[1].details == {"to": JS}
    assert recipients(case, SC) == [JS] and message_type(case) == "org.labornet.rights.case.referred.v1"


def test_the_full_path_to_resolution() -> None:
    at = FILED + timedelta(days=1)
    case = accept(filed_case(), province=JS, actor=officer("js-1"), at=at, deadlines=DEADLINES, note="受理")
    assert (case.status, case.version, case.accepted_at, case.investigation_due) == (
        Status.INVESTIGATING,
        2,
        at,
        DEADLINES.investigation_due(at, JS),
    )
    case = record_update(case, province=JS, actor=officer("js-1"), at=at, note="现场检查，责令限期支付")
    case = extend(case, province=JS, actor=officer("js-1"), at=at, deadlines=DEADLINES, reason="涉及人数多")
    assert case.extended and case.investigation_due == DEADLINES.extended(DEADLINES.investigation_due(at, JS), JS)
    with pytest.raises(CaseRuleError, match="extended once only"):
        extend(case, province=JS, actor=officer("js-1"), at=at, deadlines=DEADLINES, reason="again")
    with pytest.raises(CaseRuleError, match="more than the 12 workers"):
        resolve(case, province=JS, actor="x", at=at, amount_recovered=Decimal(1), workers_paid=13, note=None)
    case = resolve(
        case,
        province=JS,
        actor=officer("js-1"),
        at=at,
        amount_recovered=Decimal("48600.00"),
        workers_paid=12,
        note=None,
    )
    assert (case.status, case.amount_recovered, case.workers_paid, case.concluded_at) == (
        Status.RESOLVED,
        Decimal("48600.00"),
        12,
        at,
    )
    assert [e.kind for e in case.timeline] == ["filed", "referred", "accepted", "updated", "extended", "resolved"]
    assert [e.seq for e in case.timeline] == list(range(1, 7)) and case.version == 5
    assert recipients(case, JS) == [SC] and message_type(case).endswith("case.resolved.v1")
    for step in (
        lambda c: record_update(c, province=JS, actor="x", at=at, note="late"),
        lambda c: close(c, province=JS, actor="x", at=at, reason=ClosureReason.WITHDRAWN, note=None),
    ):
        with pytest.raises(CaseRuleError, match="concluded"):
            step(case)


def test_only_the_province_holding_the_case_changes_it() -> None:
    case = filed_case()
    for province in (SC, CQ):
        with pytest.raises(NotCaseHolder, match="handled by 320000"):
            accept(case, province=province, actor="x", at=FILED, deadlines=DEADLINES, note=None)
    with pytest.raises(CaseRuleError, match="needs a case that is investigating"):
        record_update(case, province=JS, actor="x", at=FILED, note="too early")
    with pytest.raises(CaseRuleError, match="is declined"):
        close(case, province=JS, actor="x", at=FILED, reason=ClosureReason.UNFOUNDED, note="no")
    with pytest.raises(NotCaseHolder, match="with province 320000"):
        close(case, province=SC, actor=COMPLAINANT, at=FILED, reason=ClosureReason.WITHDRAWN, note=None)
    with pytest.raises(NotCaseHolder, match="with province 320000"):
        refer(case, province=SC, actor="x", at=FILED, deadlines=DEADLINES, to=CQ, note=None)
    local = filed_case(work_place={"division_code": "510104"})
    with pytest.raises(CaseRuleError, match="only a returned case"):
        refer(local, province=SC, actor="x", at=FILED, deadlines=DEADLINES, to=CQ, note=None)
    with pytest.raises(NotCaseHolder, match="filed in 510000"):
        refer(case, province=JS, actor="x", at=FILED, deadlines=DEADLINES, to=CQ, note=None)


def test_a_declined_case_returns_home_and_is_referred_again() -> None:
    at = FILED + timedelta(days=2)
    returned = decline(
        filed_case(), province=JS, actor=officer("js"), at=at, reason="用工地在重庆", suggested_province=CQ
    )
    assert (returned.status, returned.handling_province, returned.holder) == (Status.RETURNED, None, SC)
    assert (returned.acceptance_due, returned.declined_by) == (None, [JS])
    assert returned.last_entry.details == {"suggested_province": CQ} and returned.last_entry.note == "用工地在重庆"
    assert recipients(returned, JS) == [SC]
    with pytest.raises(NotCaseHolder):
        accept(returned, province=JS, actor="x", at=at, deadlines=DEADLINES, note=None)

    later = at + timedelta(days=1)
    again = refer(returned, province=SC, actor=officer("sc"), at=later, deadlines=DEADLINES, to=CQ, note="转重庆")
    assert (again.status, again.handling_province, again.holder, again.version) == (Status.REFERRED, CQ, CQ, 3)
    assert again.acceptance_due == DEADLINES.acceptance_due(later, CQ) and again.referred_at == later
    assert recipients(again, SC) == [CQ], "the province that declined hears nothing more"
    taken = accept(again, province=CQ, actor=officer("cq"), at=later, deadlines=DEADLINES, note=None)
    assert taken.status == Status.INVESTIGATING


def test_the_home_province_closes_a_returned_case_and_anyone_holding_it_may_record_a_withdrawal() -> None:
    returned = decline(filed_case(), province=JS, actor="x", at=FILED, reason="不属实", suggested_province=None)
    closed = close(returned, province=SC, actor=officer("sc"), at=FILED, reason=ClosureReason.UNFOUNDED, note="查无")
    assert (closed.status, closed.closure_reason, recipients(closed, SC)) == (Status.CLOSED, "unfounded", [])
    withdrawn = close(filed_case(), province=JS, actor=COMPLAINANT, at=FILED, reason=ClosureReason.WITHDRAWN, note=None)
    assert (withdrawn.status, withdrawn.closure_reason, withdrawn.last_entry.actor) == (
        Status.CLOSED,
        ClosureReason.WITHDRAWN,
        COMPLAINANT,
    )
    assert withdrawn.last_entry.kind == EntryKind.CLOSED and message_type(withdrawn).endswith("case.closed.v1")


def test_a_local_case_is_handled_at_home_without_messages() -> None:
    case = filed_case(work_place={"division_code": "510104"})
    assert (case.handling_province, case.holder, recipients(case, SC)) == (SC, SC, [])
    taken = accept(case, province=SC, actor=officer("sc"), at=FILED, deadlines=DEADLINES, note=None)
    assert taken.status == Status.INVESTIGATING and recipients(taken, SC) == []


def test_a_redacted_copy_keeps_the_timeline_but_no_identity() -> None:
    case = decline(filed_case(), province=JS, actor="x", at=FILED, reason="非本省", suggested_province=None)
    kept = redacted(case)
    assert kept.complainant.resident_id == WORKER_ID[:4] + "*" * 10 + WORKER_ID[-4:]
    assert (kept.complainant.name, kept.complainant.phone, kept.facts) == ("王**", "138****5678", "")
    assert kept.timeline == case.timeline and kept.version == case.version
    assert WORKER_ID not in kept.model_dump_json()


# Limits on the handling province's calendar; no extension once late, escalation instead --------------------------

TIBET = "540000"
# a day off in Tibet alone (illustrative): Monday 12 October 2026 is a working day elsewhere
TIBET_DAY_OFF = Calendars(regional={TIBET: Days(holidays=frozenset({date(2026, 10, 12)}))}, official=False)


def test_each_limit_is_counted_on_the_handling_province_s_calendar() -> None:
    deadlines = Deadlines(TIBET_DAY_OFF)
    filed_friday = datetime(2026, 10, 9, 2, 0, tzinfo=UTC)  # Friday 10:00 in Beijing
    to_tibet = filed_case(at=filed_friday, deadlines=deadlines, work_place={"division_code": "540100"})
    # Mon 12 Oct is Tibet's own holiday: Tue 13, Wed 14, Thu 15, Fri 16, Mon 19 — though Sichuan files it
    assert (to_tibet.handling_province, to_tibet.acceptance_due) == (TIBET, date(2026, 10, 19))
    to_jiangsu = filed_case(at=filed_friday, deadlines=deadlines)
    assert to_jiangsu.acceptance_due == date(2026, 10, 16)
    taken = accept(to_tibet, province=TIBET, actor=officer("xz"), at=filed_friday, deadlines=deadlines, note=None)
    assert taken.investigation_due == TIBET_DAY_OFF.of(TIBET).add_workdays(filed_friday, 60)
    assert taken.investigation_due == date(2027, 1, 4)  # Fri 1 Jan on Sichuan's calendar, the next working day here
    assert TIBET_DAY_OFF.of(SC).add_workdays(filed_friday, 60) == date(2027, 1, 1)


def investigating(at: datetime = FILED) -> Case:
    return accept(filed_case(), province=JS, actor=officer("js"), at=at, deadlines=DEADLINES, note=None)


def test_an_investigation_is_extended_up_to_its_last_day_and_not_after() -> None:
    case = investigating()
    assert case.investigation_due is not None
    last_day = datetime.combine(case.investigation_due, datetime.min.time(), tzinfo=UTC) + timedelta(hours=15)
    assert extend(case, province=JS, actor="x", at=last_day, deadlines=DEADLINES, reason="on time").extended
    forty_days_late = last_day + timedelta(days=40)
    with pytest.raises(CaseRuleError) as caught:
        extend(case, province=JS, actor="x", at=forty_days_late, deadlines=DEADLINES, reason="late")
    message = str(caught.value)
    assert f"limit passed on {case.investigation_due} (40 days ago" in message
    assert "escalated with a reason" in message


def test_an_overdue_case_is_escalated_once_per_limit_and_stays_overdue() -> None:
    case = investigating()
    assert case.investigation_due is not None
    with pytest.raises(CaseRuleError, match="within its limits"):
        escalate(case, province=JS, actor="x", at=FILED + timedelta(days=3), reason="early")
    late_at = datetime.combine(case.investigation_due + timedelta(days=40), datetime.min.time(), tzinfo=UTC)
    with pytest.raises(NotCaseHolder):
        escalate(case, province=SC, actor="x", at=late_at, reason="home cannot")
    reported = escalate(case, province=JS, actor=officer("js"), at=late_at, reason="欠薪企业负责人失联")
    assert (reported.status, reported.version, reported.extended) == (Status.INVESTIGATING, case.version + 1, False)
    assert reported.investigation_due == case.investigation_due, "escalation does not move the limit"
    entry = reported.last_entry
    assert (entry.kind, entry.note, entry.actor) == (EntryKind.ESCALATED, "欠薪企业负责人失联", "officer:js")
    assert entry.details == {"deadline": "investigation", "due": case.investigation_due.isoformat(), "days_late": 40}
    assert message_type(reported) == "org.labornet.rights.case.escalated.v1" and recipients(reported, JS) == [SC]
    assert overdue(reported, late_at.date()) == Overdue.INVESTIGATION and escalated(reported) == Overdue.INVESTIGATION
    with pytest.raises(CaseRuleError, match="escalated already for its investigation limit"):
        escalate(reported, province=JS, actor="x", at=late_at, reason="again")
    with pytest.raises(CaseRuleError, match="not extended"):
        extend(reported, province=JS, actor="x", at=late_at, deadlines=DEADLINES, reason="after escalation")
    done = resolve(
        reported, province=JS, actor="x", at=late_at, amount_recovered=Decimal("100"), workers_paid=1, note=None
    )
    assert done.status == Status.RESOLVED and overdue(done, late_at.date()) is None


def test_a_referral_not_accepted_in_time_is_escalated_by_the_handling_province() -> None:
    case = filed_case()
    assert case.acceptance_due == date(2026, 10, 10)
    late_at = datetime(2026, 10, 13, 2, 0, tzinfo=UTC)
    reported = escalate(case, province=JS, actor=officer("js"), at=late_at, reason="材料待补")
    assert (reported.status, reported.last_entry.details["deadline"]) == (Status.REFERRED, "acceptance")
    assert escalated(reported) == Overdue.ACCEPTANCE
    taken = accept(reported, province=JS, actor=officer("js"), at=late_at, deadlines=DEADLINES, note=None)
    assert escalated(taken) is None and overdue(taken, late_at.date()) is None


def test_a_referral_elsewhere_may_correct_the_work_place() -> None:
    returned = decline(filed_case(), province=JS, actor="x", at=FILED, reason="实际在重庆渝中", suggested_province=CQ)
    corrected = WorkPlace(division_code="500103", site="解放碑某项目")
    with pytest.raises(CaseRuleError, match="work place 510104 is not in province 500000"):
        refer(
            returned,
            province=SC,
            actor="x",
            at=FILED,
            deadlines=DEADLINES,
            to=CQ,
            note=None,
            work_place=WorkPlace(division_code="510104"),
            work_place_name="成都市",
        )
    again = refer(
        returned,
        province=SC,
        actor=officer("sc"),
        at=FILED,
        deadlines=DEADLINES,
        to=CQ,
        note="更正用工地",
        work_place=corrected,
        work_place_name="重庆市市辖区",
    )
    assert (again.work_place, again.work_place_name, again.handling_province) == (corrected, "重庆市市辖区", CQ)
    assert again.last_entry.details == {
        "to": CQ,
        "work_place": {"division_code": "500103", "site": "解放碑某项目"},
        "previous_work_place": {"division_code": "320115", "site": "江宁某小区项目"},
    }
    kept = refer(returned, province=SC, actor="x", at=FILED, deadlines=DEADLINES, to=CQ, note=None)
    assert (kept.work_place, kept.last_entry.details) == (returned.work_place, {"to": CQ})
