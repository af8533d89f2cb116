"""What the brands API answers: one model per response shape, the contract a partner's client is generated from.

The models describe the JSON the routes build (``present`` for a brand, ``to_record`` for a demand) key for key;
``tests/test_api.py`` checks real responses against them and against the keys the API answered before they
existed. Times are kept as the strings LaborNet writes (RFC 3339, UTC, microseconds, ``Z``), not re-serialised.

A brand looks the same to everyone: its record is public (the cultivating body's credit code identifies an
enterprise, and spokespersons are the brand's public faces), so there is one brand view. Demands are shown only to
the officers of the two provinces concerned, so their one view is the officers' view.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from labornet.brands.domain.brand import BodyType, Level, Status, TrainingBaseRecord
from labornet.brands.domain.demand import DemandStatus

Timestamp = Annotated[
    str,
    Field(
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 in UTC with microseconds, e.g. 2026-01-05T02:00:00.000000Z",
    ),
]
ProvinceCode = Annotated[str, Field(pattern=r"^\d{2}0000$", description="GB/T 2260 province code, e.g. 510000")]
DivisionCode = Annotated[str, Field(pattern=r"^\d{6}$", description="GB/T 2260 division code, e.g. 510100")]


class Category(BaseModel):
    """A category a brand is registered under."""

    code: str = Field(description="permanent code, what `category` of a brand holds", examples=["catering"])
    zh: str = Field(description="Chinese name", examples=["餐饮烹饪"])
    en: str = Field(description="English name", examples=["Catering and cooking"])


class CategoryList(BaseModel):
    """The brand categories, in the order of the national brand resource database."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"code": "domestic-services", "zh": "家政服务", "en": "Domestic services"},
                        {"code": "catering", "zh": "餐饮烹饪", "en": "Catering and cooking"},
                    ]
                }
            ]
        }
    )
    items: list[Category]


# The examples hold no null: FastAPI leaves null values out of the examples of its OpenAPI document, so an example
# with one would lack a required key there. A revoked enterprise brand and an accepted demand fill every field.
BRAND_EXAMPLE: dict[str, JsonValue] = {
    "id": "510000-B-3F2A9C41D07B5E6A8C21",
    "origin_province": "510000",
    "name_zh": "川菜师傅",
    "name_en": "Sichuan Chefs",
    "division_code": "510100",
    "division_name": "成都市",
    "category": "catering",
    "category_name": "餐饮烹饪",
    "level": "provincial",
    "cultivating_body_type": "enterprise",
    "cultivating_body_name": "川厨餐饮管理有限公司",
    "cultivating_body_credit_code": "91350100M000100Y43",
    "description": "川菜烹饪技能品牌",
    "skills": ["川菜", "面点"],
    "training_bases": [{"name": "成都川菜烹饪培训基地", "division_code": "510104"}],
    "destination_regions": ["330000", "320000"],
    "people_trained": 12000,
    "jobs_supported": 30000,
    "annual_labour_income_cny": 1800000000,
    "spokespersons": ["张师傅"],
    "trademark_number": "12345678",
    "status": "revoked",
    "registered_at": "2026-01-05T02:00:00.000000Z",
    "recognised_at": "2026-01-20T08:30:12.345678Z",
    "revoked_at": "2026-06-30T09:00:00.000001Z",
    "revocation_reason": "培训基地停办",
    "updated_at": "2026-06-30T09:00:00.000001Z",
    "version": 3,
    "display_name": "川菜师傅",
    "display_name_en": "Sichuan Chefs",
    "name_conflict": False,
    "name_conflict_with": [],
}


class Brand(BaseModel):
    """A brand as the API shows it: its record (what the ``brand.*.v1`` events carry) and how the name-conflict
    rule displays it on this node. The ``ETag`` header of a single brand is its ``version``."""

    model_config = ConfigDict(json_schema_extra={"examples": [BRAND_EXAMPLE]})
    id: str = Field(description="`<origin province>-B-<20 characters>`, given at registration")
    origin_province: ProvinceCode = Field(description="the province that registered the brand and alone changes it")
    name_zh: str = Field(description="the Chinese name, unique in the origin province; fixed once recognised")
    name_en: str | None = Field(description="the English name, if any")
    division_code: DivisionCode = Field(description="the brand's home, a prefecture or county of the origin")
    division_name: str = Field(description="the name of `division_code`, as the origin knows it")
    category: str = Field(description="a category code (GET /api/v1/categories)")
    category_name: str = Field(description="the Chinese name of `category`, as the origin knows it")
    level: Level = Field(description="the level at which the brand is recognised")
    cultivating_body_type: BodyType = Field(description="who cultivates the brand")
    cultivating_body_name: str = Field(description="the cultivating body's name")
    cultivating_body_credit_code: str | None = Field(
        description="the enterprise's unified social credit code (GB 32100); null for a regional public brand"
    )
    description: str = Field(description="free text, empty when none was given")
    skills: list[str] = Field(description="the skills the brand stands for, each once")
    training_bases: list[TrainingBaseRecord] = Field(description="where the brand's workers are trained")
    destination_regions: list[ProvinceCode] = Field(description="member provinces the brand's workers go to")
    people_trained: int = Field(ge=0, description="people trained under the brand")
    jobs_supported: int = Field(ge=0, description="jobs the brand supports")
    annual_labour_income_cny: int = Field(ge=0, description="labour income of its workers, yuan (CNY) per year")
    spokespersons: list[str] = Field(description="the brand's public spokespersons")
    trademark_number: str | None = Field(description="trademark registration number (5 to 12 digits), if registered")
    status: Status = Field(description="proposed → recognised → revoked (a withdrawn proposal is revoked too)")
    registered_at: Timestamp
    recognised_at: Timestamp | None = Field(description="when an officer of the origin recognised it")
    revoked_at: Timestamp | None = Field(description="when it was revoked or withdrawn")
    revocation_reason: str | None = Field(description="why it was revoked; set exactly when revoked")
    updated_at: Timestamp
    version: int = Field(ge=1, description="raised by every change; send it back as If-Match or `version`")
    display_name: str = Field(
        description="the Chinese name as shown: suffixed with the origin, e.g. 川妹子（重庆）, when `name_conflict`"
    )
    display_name_en: str | None = Field(description="the English name as shown, suffixed likewise")
    name_conflict: bool = Field(
        description="a recognised brand of another province that shares the name was recognised first"
    )
    name_conflict_with: list[str] = Field(
        description="ids of other provinces' brands sharing the name and not revoked, proposals included"
    )


class BrandPage(BaseModel):
    """One page of a search; follow `next_cursor` (same filters) for the next."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [BRAND_EXAMPLE], "next_cursor": "eyJpZCI6IjUxMDAwMC1CLTNGMkEifQ", "total": 21}]
        }
    )
    items: list[Brand]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
    total: int = Field(ge=0, description="every brand matching the filters, whatever the cursor")


class Totals(BaseModel):
    """The sums over the counted brands."""

    brands: int = Field(ge=0)
    people_trained: int = Field(ge=0)
    jobs_supported: int = Field(ge=0)
    annual_labour_income_cny: int = Field(ge=0, description="yuan (CNY) per year")
    name_conflicts: int = Field(ge=0, description="brands flagged by the name-conflict rule")


class LevelCounts(BaseModel):
    """Brands per level."""

    model_config = ConfigDict(populate_by_name=True)
    national: int = Field(ge=0)
    provincial: int = Field(ge=0)
    city_county: int = Field(ge=0, alias="city-county")


class ProvinceStatistics(BaseModel):
    """The brands of one origin province."""

    province: str = Field(description="the origin province's code")
    name: str = Field(description="its short Chinese name, e.g. 四川 (the code for a province outside the federation)")
    brands: int = Field(ge=0)
    people_trained: int = Field(ge=0)
    jobs_supported: int = Field(ge=0)
    annual_labour_income_cny: int = Field(ge=0, description="yuan (CNY) per year")
    name_conflicts: int = Field(ge=0, description="its brands flagged by the name-conflict rule")
    levels: LevelCounts
    categories: dict[str, int] = Field(description="brands per category code, only categories it has")


class CategoryStatistics(BaseModel):
    """The brands of one category, across origin provinces."""

    category: str = Field(description="the category code")
    name: str = Field(description="its Chinese name")
    brands: int = Field(ge=0)
    people_trained: int = Field(ge=0)
    jobs_supported: int = Field(ge=0)
    annual_labour_income_cny: int = Field(ge=0, description="yuan (CNY) per year")
    provinces: dict[str, int] = Field(description="brands per origin province code, only provinces that have some")


class BrandStatistics(BaseModel):
    """Brands per origin province and per category; every member province and known category, zeros included."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "statuses": ["recognised"],
                    "total": {
                        "brands": 1,
                        "people_trained": 12000,
                        "jobs_supported": 30000,
                        "annual_labour_income_cny": 1800000000,
                        "name_conflicts": 0,
                    },
                    "provinces": [
                        {
                            "province": "510000",
                            "name": "四川",
                            "brands": 1,
                            "people_trained": 12000,
                            "jobs_supported": 30000,
                            "annual_labour_income_cny": 1800000000,
                            "name_conflicts": 0,
                            "levels": {"national": 0, "provincial": 1, "city-county": 0},
                            "categories": {"catering": 1},
                        }
                    ],
                    "categories": [
                        {
                            "category": "catering",
                            "name": "餐饮烹饪",
                            "brands": 1,
                            "people_trained": 12000,
                            "jobs_supported": 30000,
                            "annual_labour_income_cny": 1800000000,
                            "provinces": {"510000": 1},
                        }
                    ],
                }
            ]
        }
    )
    statuses: list[Status] = Field(description="the statuses counted (`status` of the request, default recognised)")
    total: Totals
    provinces: list[ProvinceStatistics]
    categories: list[CategoryStatistics]


DEMAND_EXAMPLE: dict[str, JsonValue] = {
    "id": "330000-D-9B1C7E20A4F35D68E0B2",
    "brand_id": "510000-B-3F2A9C41D07B5E6A8C21",
    "brand_name_zh": "川菜师傅",
    "origin_province": "510000",
    "demanding_province": "330000",
    "workers": 20,
    "division_code": "330106",
    "city": "西湖区",
    "period_start": "2026-03-01",
    "period_end": "2026-09-30",
    "conditions": "月薪8000元起，包食宿",
    "contact": "杭州市人社局 0571-88000000",
    "posted_by": "zj-officer",
    "posted_at": "2026-02-01T01:02:03.456789Z",
    "status": "accepted",
    "workers_offered": 15,
    "answer_note": "三月初分两批出发",
    "answered_by": "sc-officer",
    "answered_at": "2026-02-03T06:00:00.123456Z",
    "updated_at": "2026-02-03T06:00:00.123456Z",
    "version": 2,
    "side": "posted",
}


class Demand(BaseModel):
    """A demand for a brand's workers and its answer, as the officers of both provinces see it (what the
    ``demand.*.v1`` messages carry, plus `side`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [DEMAND_EXAMPLE]})
    id: str = Field(description="`<demanding province>-D-<20 characters>`")
    brand_id: str = Field(description="the partner's recognised brand")
    brand_name_zh: str = Field(description="the brand's Chinese name when the demand was posted")
    origin_province: ProvinceCode = Field(description="the brand's province, which answers")
    demanding_province: ProvinceCode = Field(description="the province that asks for workers")
    workers: int = Field(ge=1, description="how many workers are wanted")
    division_code: DivisionCode = Field(description="where they will work, in the demanding province")
    city: str = Field(description="the place of work as named in the demand (defaults to the prefecture's name)")
    period_start: str = Field(json_schema_extra={"format": "date"}, description="first day of work (date in China)")
    period_end: str = Field(json_schema_extra={"format": "date"}, description="last day of work")
    conditions: str = Field(description="wages, housing, transport, training…")
    contact: str = Field(description="whom the origin province contacts")
    posted_by: str = Field(description="the officer who posted it (token subject)")
    posted_at: Timestamp
    status: DemandStatus = Field(description="open until the brand's province answers, once")
    workers_offered: int | None = Field(description="accepted: how many workers the brand's province can send")
    answer_note: str | None = Field(description="accepted: arrangements; declined: the reason")
    answered_by: str | None = Field(
        description="the officer who answered (token subject), or labornet:automatic for a brand no longer recognised"
    )
    answered_at: Timestamp | None
    updated_at: Timestamp
    version: int = Field(ge=1, description="1 when posted, 2 when answered")
    side: Literal["posted", "received"] = Field(
        description="posted by this province, or received for one of this province's brands"
    )


class DemandPage(BaseModel):
    """One page of demands, newest first; follow `next_cursor` (same filters) for the next."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [DEMAND_EXAMPLE], "next_cursor": "eyJpZCI6IjMzMDAwMC1ELTlCMUMifQ"}]}
    )
    items: list[Demand]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
