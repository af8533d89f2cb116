"""The Transfer aggregate as plain rules (no database, the clock passed in): what each step allows, what it
raises, what moves and what is carried; and the insurance migrations against the tables the code declares."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from labornet.insurance.adapters.tables import metadata
from labornet.insurance.domain import transfer as rules
from labornet.insurance.domain.rules import (
    BenefitHistory,
    Period,
    PeriodKind,
    PersonStatus,
    entitlement_at,
    entitlement_months,
    transfer_out_sheet,
    unclaimed_after,
)
from labornet.insurance.domain.settlement import (
    SETTLEMENT_PAID,
    SETTLEMENT_SCHEDULED,
    Direction,
    SettlementRuleError,
    SettlementStatus,
    due_month,
    owed,
    paid_by_payer,
    pay,
)
from labornet.insurance.domain.transfer import (
    CONTACT_LETTER,
    INFORMATION_SHEET,
    LATE_CANCELLATION,
    RECEIPT,
    REFUSAL,
    InsuredPerson,
    Reason,
    SheetAlreadySent,
    Side,
    Standard,
    State,
    TimeLimits,
    TransferRuleError,
    WrongNode,
)
from labornet.shared.db import create_engine, platform_metadata
from labornet.shared.migrations import alembic_config, upgrade
from labornet.shared.workdays import WorkCalendar

SC, ZJ, CQ = "510000", "330000", "500000"
RID = "11010519491231002X"
AT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
LIMITS = TimeLimits(WorkCalendar())
SICHUAN, ZHEJIANG = Standard(Decimal("1870.00")), Standard(Decimal("2090.00"))
PERIODS = [
    Period(date(2017, 1, 1), date(2020, 12, 1), PeriodKind.ACTUAL, SC),
    Period(date(2021, 1, 1), date(2022, 12, 1), PeriodKind.FORMER_MIGRANT, SC),
]


def person(name: str = "陈建华", **history: int) -> InsuredPerson:
    return InsuredPerson(
        resident_id=RID,
        name=name,
        hukou_division="511602",
        status=PersonStatus.CLAIMING,
        employer_credit_code=None,
        history=BenefitHistory(**history),
        transfer_lock=None,
        version=1,
    )


def filed(**overrides: Any) -> rules.Outcome:
    arguments: dict[str, Any] = {
        "case_id": f"{ZJ}-T-1",
        "province": ZJ,
        "resident_id": RID,
        "name": "陈建华",
        "from_province": SC,
        "reason": Reason.CLAIMANT_RELOCATION,
        "new_employer": None,
        "filed_by": "worker",
        "at": AT,
        "person": None,
        "limits": LIMITS,
        "members": [SC, ZJ, CQ],
    }
    return rules.file(**(arguments | overrides))


def letter_of(outcome: rules.Outcome) -> dict[str, Any]:
    (message,) = outcome.events
    assert message.type == CONTACT_LETTER
    return message.data


def received(record: InsuredPerson | None, name: str = "陈建华") -> rules.Outcome:
    letter = letter_of(filed(name=name))
    return rules.receive_letter(
        letter, case_id=f"{SC}-C-1", province=SC, origin=ZJ, at=AT, person=record, limits=LIMITS
    )


# Art. 17 and what moves -----------------------------------------------------------------------------------------


def test_the_issue_example_combines_the_earlier_unclaimed_months_up_to_24() -> None:
    """108 months contributed, 72 of them used by an earlier claim that paid 6 of its 18 months: 12 unclaimed
    months are carried and combined with the 12 months the 36 new months give (art. 17 second paragraph)."""
    periods = [Period(date(2014, 1, 1), date(2022, 12, 1), PeriodKind.ACTUAL, SC)]
    unclaimed = unclaimed_after(entitlement_months(72), 6)
    assert unclaimed == 12
    combined = entitlement_at(
        periods, months_used=72, benefit_months_paid=0, earlier_unclaimed_months=unclaimed, monthly_standard=Decimal(1)
    )
    assert (combined.months_available, combined.entitled_months, combined.remaining_months) == (36, 24, 24)
    capped = entitlement_at(
        [*periods, Period(date(2023, 1, 1), date(2031, 12, 1), PeriodKind.ACTUAL, SC)],
        months_used=72,
        benefit_months_paid=0,
        earlier_unclaimed_months=12,
        monthly_standard=Decimal(1),
    )
    assert capped.entitled_months == 24, "18 new months + 12 unclaimed are capped at 24"


def test_unclaimed_months_alone_remain_drawable_after_under_a_year_of_new_contributions() -> None:
    periods = [Period(date(2014, 1, 1), date(2020, 6, 1), PeriodKind.ACTUAL, SC)]  # 78 months, 72 used: 6 new
    sheet = transfer_out_sheet(
        periods,
        sending_province=SC,
        status=PersonStatus.CLAIMING,
        months_used=72,
        benefit_months_paid=1,
        earlier_unclaimed_months=12,
        monthly_standard=Decimal("1870.00"),
    )
    assert (sheet.entitled_months, sheet.benefit_months_remaining) == (12, 11)
    assert sheet.history == BenefitHistory(72, 1, 12)


def test_a_round_trip_carries_the_history_once() -> None:
    """Sichuan → Zhejiang → Sichuan: the record Sichuan transferred out holds nothing live any more."""
    history = BenefitHistory(months_used=24, benefit_months_paid=3, earlier_unclaimed_months=5)
    gone = replace(person(**vars(history)), status=PersonStatus.TRANSFERRED)
    assert gone.live_history == BenefitHistory()
    case = replace(filed(province=SC, from_province=ZJ, case_id=f"{SC}-T-2").transfer)
    sheet = transfer_out_sheet(
        PERIODS,
        sending_province=ZJ,
        status=PersonStatus.CLAIMING,
        months_used=24,
        benefit_months_paid=3,
        earlier_unclaimed_months=5,
        monthly_standard=ZHEJIANG.monthly_standard,
    )
    message = {
        "receiving_case": case.id,
        "sending_case": f"{ZJ}-C-9",
        "sheet": rules.jsonable(sheet),
        "hukou_division": "511602",
        "periods": rules.periods_json(PERIODS),
    }
    outcome = rules.open_relationship(case, message, origin=ZJ, at=AT, person=gone, live_periods=[], standard=SICHUAN)
    assert outcome.person is not None and outcome.person.history == history, "not 48 used and 6 paid"
    assert outcome.person.status == PersonStatus.CLAIMING and outcome.person.version == gone.version + 1
    # 72 − 24 = 48 months → 12, plus 5 unclaimed = 17, 3 paid: 14 remain
    assert outcome.transfer.entitlement is not None and outcome.transfer.entitlement["remaining_months"] == 14
    assert [m.type for m in outcome.events] == [RECEIPT] and outcome.carried_in == tuple(PERIODS)


# The officers' outcomes ----------------------------------------------------------------------------------------


def test_filing_at_the_wrong_node_names_the_node_to_file_at() -> None:
    with pytest.raises(WrongNode) as at_sender:
        filed(from_province=ZJ)
    assert "sending office" in str(at_sender.value) and "the province the worker moves to" in str(at_sender.value)
    with pytest.raises(WrongNode) as named:
        filed(from_province=ZJ, to_province=CQ)
    assert named.value.file_at == CQ and f"insurance service of {CQ}" in str(named.value)
    with pytest.raises(WrongNode) as elsewhere:
        filed(to_province=CQ)
    assert elsewhere.value.file_at == CQ


def test_a_name_that_differs_from_the_record_is_flagged_for_the_officer() -> None:
    outcome = received(person(), name="陈建")
    case = outcome.transfer
    assert (case.state, case.name_mismatch, case.name_on_record, case.person_name) == (
        State.RECEIVED,
        True,
        "陈建华",
        "陈建",
    )
    assert "the officer decides" in case.timeline[-1].note
    assert outcome.person is not None and outcome.person.transfer_lock == case.id
    assert not received(person()).transfer.name_mismatch


def test_a_letter_for_no_record_is_refused_at_once() -> None:
    outcome = received(None)
    assert outcome.transfer.state == State.REFUSED and [m.type for m in outcome.events] == [REFUSAL]
    assert [step.state for step in outcome.transfer.timeline] == [State.RECEIVED, State.REFUSED]


def test_a_late_cancellation_is_refused_or_noted_once() -> None:
    case = filed().transfer
    completed = replace(case, state=State.COMPLETED)
    with pytest.raises(SheetAlreadySent, match="already sent the information sheet"):
        rules.cancel(completed, province=ZJ, at=AT)
    with pytest.raises(TransferRuleError):
        rules.cancel(case, province=SC, at=AT)  # not Sichuan's side to cancel

    record = person()
    sending = received(record)
    locked = sending.person
    assert locked is not None
    sent = rules.send_sheet(sending.transfer, province=SC, at=AT, person=locked, live_periods=PERIODS, standard=SICHUAN)
    assert [m.type for m in sent.events] == [INFORMATION_SHEET]
    assert sent.person is not None and sent.person.status == PersonStatus.TRANSFERRING
    noted = rules.withdrawn(sent.transfer, origin=ZJ, at=AT, person=sent.person).transfer
    assert (noted.state, noted.timeline[-1].note) == (State.SHEET_SENT, LATE_CANCELLATION)
    assert rules.withdrawn(noted, origin=ZJ, at=AT, person=sent.person).transfer == noted, "noted once"
    with pytest.raises(ValueError, match="other side"):
        rules.withdrawn(noted, origin=CQ, at=AT, person=sent.person)


def test_the_receipt_schedules_money_only_when_money_moves() -> None:
    sending = received(person(benefit_months_paid=3))
    assert sending.person is not None
    sent = rules.send_sheet(
        sending.transfer, province=SC, at=AT, person=sending.person, live_periods=PERIODS, standard=SICHUAN
    )
    assert sent.transfer.sheet is not None and sent.transfer.sheet["fund_due"] == "42075.00"
    done = rules.close_relationship(
        sent.transfer, origin=ZJ, at=AT, person=sent.person, settlement_id=f"{SC}-S-1", settlement_due=date(2026, 12, 1)
    )
    assert done.transfer.state == State.COMPLETED and done.carried_out
    assert done.settlement is not None and done.settlement.amount == Decimal("42075.00")
    assert [m.type for m in done.events] == [SETTLEMENT_SCHEDULED]
    assert done.person is not None and done.person.status == PersonStatus.TRANSFERRED

    employed = replace(person(), status=PersonStatus.EMPLOYED)
    letter = received(employed)
    assert letter.person is not None
    sheet = rules.send_sheet(
        letter.transfer, province=SC, at=AT, person=letter.person, live_periods=PERIODS, standard=SICHUAN
    )
    closed = rules.close_relationship(
        sheet.transfer, origin=ZJ, at=AT, person=sheet.person, settlement_id="x", settlement_due=date(2026, 12, 1)
    )
    assert closed.settlement is None and closed.events == (), "no settlement of nothing"
    again = rules.close_relationship(
        closed.transfer, origin=ZJ, at=AT, person=None, settlement_id="y", settlement_due=date(2026, 12, 1)
    )
    assert again.transfer == closed.transfer and not again.changed


def test_the_due_month_follows_chinas_date() -> None:
    # 2026-11-30 17:00 UTC is already 1 December in China: the plan after that is January's
    assert due_month(datetime(2026, 11, 30, 17, 0, tzinfo=UTC)) == date(2027, 1, 1)
    assert due_month(datetime(2026, 11, 30, 15, 0, tzinfo=UTC)) == date(2026, 12, 1)
    assert due_month(datetime(2026, 12, 31, 15, 59, tzinfo=UTC)) == date(2027, 1, 1)


def test_only_the_payer_pays_and_the_receiver_learns_it() -> None:
    sending = received(person(benefit_months_paid=3))
    assert sending.person is not None
    sent = rules.send_sheet(
        sending.transfer, province=SC, at=AT, person=sending.person, live_periods=PERIODS, standard=SICHUAN
    )
    done = rules.close_relationship(
        sent.transfer, origin=ZJ, at=AT, person=sent.person, settlement_id=f"{SC}-S-1", settlement_due=date(2026, 12, 1)
    )
    assert done.settlement is not None
    (scheduled,) = done.events
    copy = owed(scheduled.data, origin=SC, province=ZJ, receiving_case=f"{ZJ}-T-1", at=AT)
    assert (copy.direction, copy.amount, copy.from_province, copy.peer_case) == (
        Direction.INCOMING,
        Decimal("42075.00"),
        SC,
        done.transfer.id,
    )
    with pytest.raises(SettlementRuleError, match="only the paying province"):
        pay(copy, province=ZJ, by="officer", reference="R1", at=AT)
    paid, message = pay(done.settlement, province=SC, by="officer", reference="SC-2026-12-0001", at=AT)
    assert (paid.status, message.type, message.to) == (SettlementStatus.PAID, SETTLEMENT_PAID, ZJ)
    with pytest.raises(SettlementRuleError, match="already paid"):
        pay(paid, province=SC, by="officer", reference=None, at=AT)
    received_copy = paid_by_payer(copy, message.data, origin=SC)
    assert (received_copy.status, received_copy.payment_reference) == (SettlementStatus.PAID, "SC-2026-12-0001")
    assert paid_by_payer(received_copy, message.data, origin=SC) == received_copy


def test_a_side_changes_only_by_its_holder() -> None:
    case = filed().transfer
    assert (case.side, case.holder, case.peer) == (Side.RECEIVING, ZJ, SC)
    with pytest.raises(ValueError, match="other side"):
        rules.refused(case, {"reason": "x", "sending_case": "c"}, origin=CQ, at=AT)


# Migrations ----------------------------------------------------------------------------------------------------

MIGRATIONS = "labornet.insurance:migrations"


async def test_migrations_build_exactly_the_declared_tables_and_come_down_again(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine, MIGRATIONS)
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), [platform_metadata, metadata])
            )
        assert diff == []
        async with engine.begin() as connection:
            await connection.run_sync(
                lambda sync: command.downgrade(alembic_config(MIGRATIONS, sync), "insurance_0001")
            )
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert not names & set(metadata.tables) and "outbox" in names
        await upgrade(engine, MIGRATIONS)
    finally:
        await engine.dispose()
