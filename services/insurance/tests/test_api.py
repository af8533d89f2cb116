"""The insurance API of one node, served by uvicorn on a real port with a real database (SQLite and PostgreSQL)
and the real broker: records and their bulk import, filing checks, who may see what, time limits, settlements
and the benefit configuration."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import insert, select, update

from labornet.insurance.adapters.tables import contribution_period, insured_person, settlement, transfer
from labornet.insurance.app import create_app
from labornet.shared.db import create_engine
from labornet.shared.identifiers import make_resident_id
from labornet.shared.keys import NodeKeys
from labornet.shared.settings import Settings
from labornet.shared.testing import assert_problem, bearer, eventually, serving

ZJ, SC = "330000", "510000"


def person(n: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resident_id": make_resident_id("330106", date(1990, 5, 17), n),
        "name": f"李娜{n}",
        "hukou_division": "330106",
        "status": "insured-employed",
        "employer_credit_code": "91350100M000100Y43",
        "periods": [
            {"start_month": "2019-01", "end_month": "2021-06", "kind": "actual"},
            {"start_month": "2021-07", "end_month": "2023-12", "kind": "deemed"},
        ],
    }
    body.update(overrides)
    return body


@pytest.fixture
async def node(
    make_settings: Callable[..., Settings], database_url: str, node_keys: dict[str, NodeKeys]
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """Zhejiang's insurance service; the gauge sweep runs every 50 ms so metrics can be read back."""
    settings = make_settings(ZJ, "insurance", database_url, insurance_sweep_interval_s=0.05)
    async with serving(create_app(settings)) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, timeout_s=60)
        yield client, database_url


def officer(keys: dict[str, NodeKeys], province: str = ZJ) -> dict[str, str]:
    return bearer(keys[province], "officer", sub=f"officer-{province}")


def worker(keys: dict[str, NodeKeys], resident_id: str) -> dict[str, str]:
    return bearer(keys[ZJ], "worker", sub=resident_id)


# Records ----------------------------------------------------------------------------------------------


async def test_records_are_validated_field_by_field(
    node: tuple[httpx.AsyncClient, str], node_keys: dict[str, NodeKeys]
) -> None:
    client, _ = node
    headers = officer(node_keys)
    bad_id = person(1)
    bad_id["resident_id"] = bad_id["resident_id"][:-1] + ("0" if bad_id["resident_id"][-1] != "0" else "1")
    problem = assert_problem(await client.post("/api/v1/insured-persons", headers=headers, json=bad_id), 422)
    assert "resident_id" in str(problem["errors"]) and "check" in str(problem["errors"]).lower()

    overlapping = person(2, periods=[*person(2)["periods"], {"start_month": "2020-01", "end_month": "2020-03"}])
    problem = assert_problem(await client.post("/api/v1/insured-persons", headers=headers, json=overlapping), 422)
    assert "overlap" in str(problem["errors"])

    reversed_period = person(3, periods=[{"start_month": "2022-05", "end_month": "2021-01"}])
    problem = assert_problem(await client.post("/api/v1/insured-persons", headers=headers, json=reversed_period), 422)
    assert "periods" in str(problem["errors"]) and "before" in str(problem["errors"])

    created = await client.post("/api/v1/insured-persons", headers=headers, json=person(4))
    assert created.status_code == 201, created.text
    assert created.json() == {"resident_id": person(4)["resident_id"], "periods": 2}
    assert_problem(await client.post("/api/v1/insured-persons", headers=headers, json=person(4)), 409)


async def test_only_this_provinces_officers_write_records(
    node: tuple[httpx.AsyncClient, str], node_keys: dict[str, NodeKeys]
) -> None:
    client, _ = node
    sichuan_officer = bearer(node_keys[ZJ], "officer", sub="intruder", province=SC)
    assert_problem(await client.post("/api/v1/insured-persons", headers=sichuan_officer, json=person(5)), 403)
    a_worker = worker(node_keys, person(5)["resident_id"])
    assert_problem(await client.post("/api/v1/insured-persons", headers=a_worker, json=person(5)), 403)
    assert_problem(await client.post("/api/v1/insured-persons", json=person(5)), 401)


async def test_a_worker_sees_their_own_record_and_nobody_elses(
    node: tuple[httpx.AsyncClient, str], node_keys: dict[str, NodeKeys]
) -> None:
    client, _ = node
    mine, theirs = person(6), person(7)
    for body in (mine, theirs):
        assert (await client.post("/api/v1/insured-persons", headers=officer(node_keys), json=body)).status_code == 201
    own = await client.get(
        f"/api/v1/insured-persons/{mine['resident_id']}", headers=worker(node_keys, mine["resident_id"])
    )
    assert own.status_code == 200
    assert own.json()["resident_id"] == mine["resident_id"]
    assert [p["start_month"] for p in own.json()["periods"]] == ["2019-01-01", "2021-07-01"]
    other = await client.get(
        f"/api/v1/insured-persons/{theirs['resident_id']}", headers=worker(node_keys, mine["resident_id"])
    )
    missing = await client.get(
        f"/api/v1/insured-persons/{person(99)['resident_id']}", headers=worker(node_keys, mine["resident_id"])
    )
    assert_problem(other, 404)
    assert other.json()["detail"].replace(theirs["resident_id"], "") == other.json()["detail"], "never echoed"
    assert_problem(missing, 404)


def csv_of(rows: list[dict[str, str]]) -> str:
    columns = (
        "resident_id,name,hukou_division,status,employer_credit_code,months_used,benefit_months_paid,"
        "start_month,end_month,kind,period_employer_credit_code"
    )
    lines = [columns] + [",".join(row.get(c, "") for c in columns.split(",")) for row in rows]
    return "\n".join(lines) + "\n"


async def test_bulk_import_is_all_or_nothing_with_a_row_level_report(
    node: tuple[httpx.AsyncClient, str], node_keys: dict[str, NodeKeys]
) -> None:
    client, url = node
    a, b = person(10)["resident_id"], person(11)["resident_id"]
    base = {"hukou_division": "330106", "status": "unemployed-claiming", "months_used": "0", "kind": "actual"}
    rows = [
        base | {"resident_id": a, "name": "甲", "start_month": "2015-01", "end_month": "2018-12"},
        base | {"resident_id": a, "name": "甲", "start_month": "2019-01", "end_month": "2020-06", "kind": "deemed"},
        base | {"resident_id": b, "name": "乙", "start_month": "2016-03", "end_month": "2016-13"},  # bad month
    ]
    headers = officer(node_keys) | {"Content-Type": "text/csv"}
    rejected = await client.post("/api/v1/insured-persons/import", headers=headers, content=csv_of(rows))
    problem = assert_problem(rejected, 422)
    assert [(e["line"], e["field"]) for e in problem["errors"]] == [(4, "periods.0.end_month")]
    assert_problem(await client.get(f"/api/v1/insured-persons/{a}", headers=officer(node_keys)), 404)

    rows[2]["end_month"] = "2016-12"
    imported = await client.post("/api/v1/insured-persons/import", headers=headers, content=csv_of(rows))
    assert imported.status_code == 200, imported.text
    assert imported.json() == {"imported_persons": 2, "imported_periods": 3}

    # again, plus one new person: the two known persons are reported and the new one is not half-imported
    c = person(12)["resident_id"]
    rows.append(base | {"resident_id": c, "name": "丙", "start_month": "2010-01", "end_month": "2010-12"})
    again = assert_problem(
        await client.post("/api/v1/insured-persons/import", headers=headers, content=csv_of(rows)), 422
    )
    assert {e["field"] for e in again["errors"]} == {"resident_id"} and len(again["errors"]) == 2
    engine = create_engine(url)
    async with engine.connect() as connection:
        persons = (await connection.execute(select(insured_person.c.resident_id))).scalars().all()
        periods = (await connection.execute(select(contribution_period.c.id))).scalars().all()
    await engine.dispose()
    assert sorted(persons) == sorted([a, b]) and len(periods) == 3

    missing_column = "resident_id,name\n" + a + ",甲\n"
    problem = assert_problem(
        await client.post("/api/v1/insured-persons/import", headers=headers, content=missing_column), 422
    )
    assert problem["errors"][0]["line"] == 1 and "hukou_division" in problem["errors"][0]["field"]
    not_utf8 = "resident_id,name\n".encode("utf-16")
    assert_problem(await client.post("/api/v1/insured-persons/import", headers=headers, content=not_utf8), 422)


# Filing ----------------------------------------------------------------------------------------------


async def test_filing_checks_the_request_before_any_letter_leaves(
    node: tuple[httpx.AsyncClient, str], node_keys: dict[str, NodeKeys]
) -> None:
    client, _ = node
    mover = make_resident_id("511602", date(1988, 3, 7), 1)
    me = worker(node_keys, mover)
    body = {"from_province": SC, "reason": "claimant-relocation", "name": "王晓明"}

    problem = assert_problem(
        await client.post("/api/v1/transfers", headers=me, json=body | {"from_province": "110000"}), 422
    )
    assert problem["errors"][0]["field"] == "body.from_province"
    problem = assert_problem(
        await client.post("/api/v1/transfers", headers=me, json=body | {"reason": "new-employment"}), 422
    )
    assert "new_employer_credit_code" in str(problem["errors"])
    at_sender = assert_problem(
        await client.post("/api/v1/transfers", headers=me, json=body | {"from_province": ZJ}), 409
    )
    assert "sending office" in str(at_sender["detail"]) and "moves to" in str(at_sender["detail"])
    elsewhere = assert_problem(
        await client.post("/api/v1/transfers", headers=me, json=body | {"to_province": "500000"}), 409
    )
    assert (elsewhere["file_at"], "insurance service of 500000" in str(elsewhere["detail"])) == ("500000", True)

    filed = await client.post("/api/v1/transfers", headers=me, json=body)
    assert filed.status_code == 201, filed.text
    case = filed.json()
    assert (case["state"], case["side"], case["resident_id"], case["overdue"]) == (
        "awaiting-answer",
        "receiving",
        mover,
        False,
    )
    assert filed.headers["Location"] == f"/api/v1/transfers/{case['id']}"
    again = assert_problem(await client.post("/api/v1/transfers", headers=me, json=body), 409)
    assert "in progress" in str(again["detail"])

    local = person(20)
    await client.post("/api/v1/insured-persons", headers=officer(node_keys), json=local)
    already_here = await client.post(
        "/api/v1/transfers", headers=worker(node_keys, local["resident_id"]), json=body | {"name": local["name"]}
    )
    assert "already insured" in str(assert_problem(already_here, 409)["detail"])

    one = await client.get(f"/api/v1/transfers/{case['id']}", headers=me)
    assert [step["state"] for step in one.json()["timeline"]] == ["awaiting-answer"]

    def transfers_in(state: str) -> float | None:
        labels = {"side": "receiving", "state": state, "from_province": SC, "to_province": ZJ}
        return REGISTRY.get_sample_value("labornet_insurance_transfers", labels)

    async def counted_waiting() -> bool:
        return transfers_in("awaiting-answer") == 1

    await eventually(counted_waiting)
    stranger = worker(node_keys, make_resident_id("511602", date(1988, 3, 7), 2))
    assert_problem(await client.get(f"/api/v1/transfers/{case['id']}", headers=stranger), 404)
    assert_problem(await client.post(f"/api/v1/transfers/{case['id']}/cancel", headers=stranger), 404)
    assert (await client.get("/api/v1/transfers", headers=stranger)).json()["items"] == []
    officer_view = (await client.get("/api/v1/transfers", headers=officer(node_keys))).json()["items"]
    assert [c["resident_id"] for c in officer_view] == [mover], "this province's officers see it in full"
    other_officer = bearer(node_keys[ZJ], "officer", "worker", sub="someone-else", province=SC)
    assert_problem(await client.get(f"/api/v1/transfers/{case['id']}", headers=other_officer), 404)

    assert (await client.post(f"/api/v1/transfers/{case['id']}/cancel", headers=me)).json()[
        "state"
    ] == "cancel-requested"

    async def the_emptied_state_reads_zero() -> bool:
        return transfers_in("awaiting-answer") == 0 and transfers_in("cancel-requested") == 1

    await eventually(the_emptied_state_reads_zero)


async def test_overdue_cases_are_flagged_listed_and_counted(
    node: tuple[httpx.AsyncClient, str], node_keys: dict[str, NodeKeys]
) -> None:
    client, url = node
    ids = []
    for n in (30, 31):
        mover = make_resident_id("511602", date(1988, 3, 7), n)
        body = {"from_province": SC, "reason": "return-to-hukou", "name": f"张{n}"}
        ids.append((await client.post("/api/v1/transfers", headers=worker(node_keys, mover), json=body)).json()["id"])
    engine = create_engine(url)
    async with engine.begin() as connection:  # the first request was filed five weeks ago and never answered
        await connection.execute(
            update(transfer)
            .where(transfer.c.id == ids[0])
            .values(filed_at=datetime.now(UTC) - timedelta(days=35), complete_due=date.today() - timedelta(days=7))
        )
    await engine.dispose()
    listed = (await client.get("/api/v1/transfers", params={"overdue": "true"}, headers=officer(node_keys))).json()
    assert [(c["id"], c["overdue"]) for c in listed["items"]] == [(ids[0], True)]
    assert (await client.get(f"/api/v1/transfers/{ids[1]}", headers=officer(node_keys))).json()["overdue"] is False

    async def counted() -> bool:
        value = REGISTRY.get_sample_value("labornet_insurance_transfers_overdue", {"side": "receiving"})
        return value == 1

    await eventually(counted)


# Settlements and configuration -----------------------------------------------------------------------


async def test_settlements_are_marked_paid_once(
    node: tuple[httpx.AsyncClient, str], node_keys: dict[str, NodeKeys]
) -> None:
    client, url = node
    settlement_id = f"{ZJ}-S-{uuid.uuid4().hex[:12].upper()}"
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(
            insert(settlement).values(
                id=settlement_id,
                transfer_id=f"{ZJ}-T-1",
                peer_case=f"{SC}-T-1",
                resident_id=person(40)["resident_id"],
                to_province=SC,
                amount=Decimal("42075.00"),
                due_month=date(2026, 12, 1),
                status="pending",
                created_at=datetime.now(UTC),
            )
        )
        await connection.execute(
            insert(settlement).values(
                id=f"{SC}-S-OWED",
                transfer_id=f"{ZJ}-T-2",
                peer_case=f"{SC}-C-2",
                resident_id=person(41)["resident_id"],
                from_province=SC,
                to_province=ZJ,
                direction="incoming",
                amount=Decimal("61710.00"),
                due_month=date(2026, 12, 1),
                status="pending",
                created_at=datetime.now(UTC),
            )
        )
    await engine.dispose()
    headers = officer(node_keys)
    owed = (await client.get("/api/v1/settlements", params={"direction": "incoming"}, headers=headers)).json()
    assert [(s["id"], s["from_province"]) for s in owed["items"]] == [(f"{SC}-S-OWED", SC)]
    assert_problem(await client.post(f"/api/v1/settlements/{SC}-S-OWED/paid", headers=headers), 409, "paying province")

    async def receivable_gauge() -> bool:
        return REGISTRY.get_sample_value("labornet_insurance_settlements_receivable_yuan") == 61710.0

    await eventually(receivable_gauge)
    pending = (
        await client.get("/api/v1/settlements", params={"status": "pending", "direction": "outgoing"}, headers=headers)
    ).json()
    assert [(s["id"], Decimal(str(s["amount"]))) for s in pending["items"]] == [(settlement_id, Decimal("42075.00"))]

    async def pending_gauge() -> bool:
        return REGISTRY.get_sample_value("labornet_insurance_settlements_pending_yuan") == 42075.0

    await eventually(pending_gauge)
    assert_problem(await client.get("/api/v1/settlements", params={"status": "owed"}, headers=headers), 422)
    paid = await client.post(
        f"/api/v1/settlements/{settlement_id}/paid", headers=headers, json={"payment_reference": "ZJ-2026-12-0042"}
    )
    assert (paid.status_code, paid.json()["status"], paid.json()["paid_by"]) == (200, "paid", f"officer-{ZJ}")
    assert (paid.json()["payment_reference"], paid.json()["direction"]) == ("ZJ-2026-12-0042", "outgoing")
    assert_problem(await client.post(f"/api/v1/settlements/{settlement_id}/paid", headers=headers), 409)
    assert_problem(await client.post(f"/api/v1/settlements/{ZJ}-S-NONE/paid", headers=headers), 404)
    assert_problem(await client.get("/api/v1/settlements", headers=worker(node_keys, person(40)["resident_id"])), 403)


async def test_benefit_configuration_stays_between_the_lines(
    node: tuple[httpx.AsyncClient, str], node_keys: dict[str, NodeKeys]
) -> None:
    client, _ = node
    public = (await client.get("/api/v1/benefit-config")).json()
    assert (public["province"], Decimal(str(public["monthly_standard"]))) == (ZJ, Decimal("2090.00"))
    above_minimum_wage = {"monthly_standard": "2600.00", "minimum_wage": "2490.00", "subsistence_line": "1050.00"}
    problem = assert_problem(
        await client.put("/api/v1/benefit-config", headers=officer(node_keys), json=above_minimum_wage), 422
    )
    assert "minimum wage" in str(problem["errors"])
    raised = above_minimum_wage | {"monthly_standard": "2200.00", "answer_limit_days": 4}
    updated = await client.put("/api/v1/benefit-config", headers=officer(node_keys), json=raised)
    assert updated.status_code == 200, updated.text
    assert (Decimal(str(updated.json()["monthly_standard"])), updated.json()["answer_limit_days"]) == (
        Decimal("2200.00"),
        4,
    )
    assert_problem(
        await client.put("/api/v1/benefit-config", headers=worker(node_keys, person(1)["resident_id"]), json=raised),
        403,
    )
