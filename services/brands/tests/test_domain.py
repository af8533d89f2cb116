"""Brand and demand rules without infrastructure: request validation, the name-conflict rule, search tokens."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from labornet.brands.domain.brand import (
    BrandChanges,
    BrandDraft,
    NameFixed,
    StaleVersion,
    Status,
    VersionRequired,
    check_update,
    normalise_name,
)
from labornet.brands.domain.demand import DemandAnswer, DemandRecord, DemandRequest
from labornet.brands.domain.names import NameClaim, resolve_names
from labornet.brands.domain.text import document, tokens
from labornet.shared.clock import today_in_china
from labornet.shared.provinces import load_registry

PROVINCES = {p.code: p for p in load_registry()}
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def draft(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name_zh": "川菜师傅",
        "name_en": "Sichuan Chefs",
        "division_code": "510100",
        "category": "catering",
        "level": "provincial",
        "cultivating_body": {"type": "regional-public", "name": "四川省人力资源和社会保障厅"},
    }
    body.update(overrides)
    return body


def error_fields(exc: ValidationError) -> list[str]:
    return [".".join(str(part) for part in error["loc"]) for error in exc.errors()]


# --- requests ---------------------------------------------------------------------------------------------


def test_a_complete_draft_is_normalised() -> None:
    parsed = BrandDraft.model_validate(
        draft(
            name_zh="  川妹子 ",
            skills=["家政", "家政", "育婴"],
            destination_regions=["330000", "330000", "320000"],
            trademark_number="第 12345678 号",
            cultivating_body={"type": "enterprise", "name": "川妹子家政公司", "credit_code": "91350100m000100y43"},
        )
    )
    assert parsed.name_zh == "川妹子"
    assert parsed.skills == ["家政", "育婴"]
    assert parsed.destination_regions == ["330000", "320000"]
    assert parsed.trademark_number == "12345678"
    assert parsed.cultivating_body.credit_code == "91350100M000100Y43"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"name_zh": "Sichuan Chefs"}, "name_zh", "Chinese name"),
        ({"name_zh": ""}, "name_zh", "at least 1"),
        ({"name_zh": "川" * 51}, "name_zh", "at most 50"),
        ({"category": "cooking"}, "category", "not in the brand category list"),
        ({"level": "regional"}, "level", "national"),
        ({"division_code": "5101"}, "division_code", "6 digits"),
        ({"destination_regions": ["330100"]}, "destination_regions.0", "ending in 0000"),
        ({"people_trained": -1}, "people_trained", "greater than or equal to 0"),
        ({"trademark_number": "TM-1"}, "trademark_number", "5 to 12 digits"),
        ({"cultivating_body": {"type": "enterprise", "name": "某公司"}}, "cultivating_body.credit_code", "credit code"),
        (
            {"cultivating_body": {"type": "enterprise", "name": "某公司", "credit_code": "91350100M000100Y44"}},
            "cultivating_body.credit_code",
            "check character should be 3",
        ),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_a_bad_draft_names_the_field(overrides: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        BrandDraft.model_validate(draft(**overrides))
    assert field in error_fields(caught.value)
    assert message in str(caught.value)


def test_changes_must_change_something_and_cannot_remove_required_fields() -> None:
    with pytest.raises(ValidationError, match="changes nothing"):
        BrandChanges.model_validate({"version": 1})
    with pytest.raises(ValidationError, match="category cannot be removed"):
        BrandChanges.model_validate({"version": 1, "category": None})
    assert BrandChanges.model_validate({"name_en": None}).name_en is None  # optional fields may be cleared


def test_names_compare_in_normalised_form() -> None:
    assert normalise_name("川 妹子！") == normalise_name("川妹子") == "川妹子"
    assert normalise_name("ＳＨＵ Embroidery") == normalise_name("shu embroidery")


def test_the_chinese_name_changes_only_while_proposed() -> None:
    current = {"id": "510000-B-1", "name_zh": "川妹子", "status": Status.RECOGNISED, "version": 3}
    check_update(current, BrandChanges(name_zh="川 妹子", version=3), 3)  # the same name, spelt differently
    with pytest.raises(NameFixed, match="recognised as 川妹子"):
        check_update(current, BrandChanges(name_zh="川妹儿", version=3), 3)
    check_update({**current, "status": Status.PROPOSED}, BrandChanges(name_zh="川妹儿"), 3)
    with pytest.raises(StaleVersion, match="version 3, not 2"):
        check_update(current, BrandChanges(description="x"), 2)
    with pytest.raises(VersionRequired):
        check_update(current, BrandChanges(description="x"), None)


def demand(**overrides: Any) -> dict[str, Any]:
    today = today_in_china()
    body: dict[str, Any] = {
        "brand_id": "510000-B-ABC123",
        "workers": 20,
        "division_code": "330106",
        "period": {"start": (today + timedelta(days=10)).isoformat(), "end": (today + timedelta(days=200)).isoformat()},
        "conditions": "月薪8000元起，包食宿",
        "contact": "杭州市人社局 0571-88000000",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"workers": 0}, "workers", "greater than or equal to 1"),
        ({"brand_id": "not-a-brand"}, "brand_id", "pattern"),
        ({"period": {"start": "2020-01-01", "end": "2020-02-01"}}, "period", "in the past"),
        (
            {
                "period": {
                    "start": (today_in_china() + timedelta(days=9)).isoformat(),
                    "end": today_in_china().isoformat(),
                }
            },
            "period",
            "before its start",
        ),
        ({"conditions": ""}, "conditions", "at least 1"),
        ({"division_code": "33010"}, "division_code", "6 digits"),
    ],
)
def test_a_bad_demand_names_the_field(overrides: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DemandRequest.model_validate(demand(**overrides))
    assert field in error_fields(caught.value)
    assert message in str(caught.value)


def test_an_answer_is_complete() -> None:
    assert DemandAnswer(decision="accepted", workers_offered=12).workers_offered == 12
    with pytest.raises(ValidationError, match="how many workers"):
        DemandAnswer(decision="accepted")
    with pytest.raises(ValidationError, match="reason"):
        DemandAnswer(decision="declined")
    with pytest.raises(ValidationError, match="offers no workers"):
        DemandAnswer(decision="declined", workers_offered=3, note="季节不合适")


def test_a_demand_record_is_consistent() -> None:
    record: dict[str, Any] = {
        "id": "330000-D-1",
        "brand_id": "510000-B-1",
        "brand_name_zh": "川菜师傅",
        "origin_province": "510000",
        "demanding_province": "330000",
        "workers": 20,
        "division_code": "330106",
        "city": "杭州市",
        "period_start": "2026-04-01",
        "period_end": "2026-10-01",
        "conditions": "包食宿",
        "contact": "0571-88000000",
        "posted_by": "zj-officer",
        "posted_at": T0.isoformat(),
        "status": "open",
        "workers_offered": None,
        "answer_note": None,
        "answered_by": None,
        "answered_at": None,
        "updated_at": T0.isoformat(),
        "version": 1,
    }
    assert DemandRecord.model_validate(record).status == "open"
    answered = {"status": "accepted", "answered_at": T0.isoformat(), "answered_by": "sc", "version": 2}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"id": "510000-D-1"}, "not made by province 330000"),
        ({"brand_id": "330000-B-1"}, "not of province 510000"),
        ({"division_code": "510104"}, "outside the demanding province"),
        ({**answered, "workers_offered": None}, "workers_offered goes with an acceptance"),
        ({**answered, "workers_offered": 21}, "more workers than were asked"),
        ({"status": "declined", "answered_at": T0.isoformat(), "version": 2}, "without a reason"),
    ]
    for broken, message in cases:
        with pytest.raises(ValidationError, match=message):
            DemandRecord.model_validate({**record, **broken})


# --- the name-conflict rule -------------------------------------------------------------------------------


def claim(brand_id: str, status: Status = Status.RECOGNISED, at: int | None = 0, name: str = "川妹子") -> NameClaim:
    return NameClaim(
        brand_id=brand_id,
        origin_province=brand_id[:6],
        name_zh=name,
        name_en="Chuanmeizi",
        normalised_name=normalise_name(name),
        status=status,
        recognised_at=None if at is None or status == Status.PROPOSED else T0 + timedelta(seconds=at),
    )


def test_the_earliest_recognition_keeps_the_name_and_the_other_is_flagged() -> None:
    sichuan, chongqing = claim("510000-B-1", at=5), claim("500000-B-1", at=3)
    resolved = resolve_names([sichuan, chongqing], PROVINCES)
    assert resolved["500000-B-1"].name_conflict is False
    assert resolved["500000-B-1"].display_name == "川妹子"
    assert resolved["510000-B-1"].name_conflict is True
    assert resolved["510000-B-1"].display_name == "川妹子（四川）"
    assert resolved["510000-B-1"].display_name_en == "Chuanmeizi (Sichuan)"
    assert resolved["510000-B-1"].name_conflict_with == ("500000-B-1",)
    assert resolved["500000-B-1"].name_conflict_with == ("510000-B-1",)


def test_a_tie_goes_to_the_lower_province_code() -> None:
    resolved = resolve_names([claim("510000-B-1"), claim("500000-B-9"), claim("530000-B-0")], PROVINCES)
    assert [b for b, r in sorted(resolved.items()) if not r.name_conflict] == ["500000-B-9"]


def test_the_outcome_does_not_depend_on_the_order_brands_arrived_in() -> None:
    claims = [
        claim("510000-B-1", at=2),
        claim("500000-B-1", at=2),
        claim("330000-B-1", status=Status.PROPOSED),
        claim("520000-B-1", at=1, status=Status.REVOKED),
        claim("320000-B-1", at=9, name="川 妹子!"),
        claim("530000-B-1", at=0, name="蜀绣"),
    ]
    outcomes = {tuple(sorted(resolve_names(order, PROVINCES).items())) for order in itertools.permutations(claims)}
    assert len(outcomes) == 1
    (outcome,) = outcomes
    flagged = {brand_id for brand_id, resolution in outcome if resolution.name_conflict}
    assert flagged == {"510000-B-1", "320000-B-1"}


def test_proposals_are_detected_but_not_flagged_and_a_revoked_brand_gives_its_name_up() -> None:
    resolved = resolve_names([claim("510000-B-1", status=Status.PROPOSED), claim("500000-B-1", at=1)], PROVINCES)
    assert resolved["510000-B-1"].name_conflict_with == ("500000-B-1",)
    assert not resolved["510000-B-1"].name_conflict and not resolved["500000-B-1"].name_conflict

    before = resolve_names([claim("500000-B-1", at=1), claim("510000-B-1", at=2)], PROVINCES)
    assert before["510000-B-1"].name_conflict
    after = resolve_names([claim("500000-B-1", at=1, status=Status.REVOKED), claim("510000-B-1", at=2)], PROVINCES)
    assert not after["510000-B-1"].name_conflict and after["510000-B-1"].name_conflict_with == ()
    assert after["500000-B-1"].name_conflict_with == ()


def test_brands_of_one_province_never_flag_each_other() -> None:
    resolved = resolve_names([claim("510000-B-1", at=1), claim("510000-B-2", at=2)], PROVINCES)
    assert not any(r.name_conflict or r.name_conflict_with for r in resolved.values())


# --- search tokens ----------------------------------------------------------------------------------------


def test_chinese_text_becomes_bigrams_and_latin_text_words() -> None:
    assert tokens("川菜师傅 Sichuan Chefs") == ["川菜", "菜师", "师傅", "sichuan", "chefs"]
    assert tokens("蜀") == ["蜀"]
    assert document(["川菜 川菜", "chef"]) == " 川菜 chef "
