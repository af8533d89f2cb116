"""Labour-service brands (劳务品牌): what an officer registers, the rules of a brand's life, the events it causes.

A brand belongs to its origin province: only that province's officers register, change, recognise and revoke it,
and every change raises its ``version``. Partners keep a replica that applies a change only when its version is
newer than what they hold.

Life: ``proposed`` (registered, awaiting recognition) → ``recognised`` → ``revoked``. A proposal that will not be
recognised is revoked too (withdrawn), so ``revoked`` is the one end state, and it always carries a reason. A
revoked brand never changes again and gives its name free in its province.

A brand name is unique in its origin province, compared in :func:`normalise_name` form (full-width letters folded,
case, spaces and punctuation ignored: ``川 妹子`` and ``川妹子！`` are the name ``川妹子``). The Chinese name is what
gets recognised, so it can change only while the brand is proposed. Across provinces the same name may be
recognised twice; :mod:`labornet.brands.domain.names` decides, identically on every node, which brand keeps it.
"""

from __future__ import annotations

import functools
import json
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib.resources import files
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from labornet.brands.domain.text import has_cjk
from labornet.shared.bounds import PositiveInt32
from labornet.shared.db import as_utc
from labornet.shared.identifiers import (
    CreditCodeStr,
    DivisionCodeStr,
    ProvinceCodeStr,
    validate_credit_code,
)

REGISTERED = "org.labornet.brands.brand.registered.v1"
UPDATED = "org.labornet.brands.brand.updated.v1"
RECOGNISED = "org.labornet.brands.brand.recognised.v1"
REVOKED = "org.labornet.brands.brand.revoked.v1"
EVENT_TYPES = (REGISTERED, UPDATED, RECOGNISED, REVOKED)

MAX_NAME_LENGTH = 50
MAX_PEOPLE = 100_000_000
MAX_INCOME_CNY = 10_000_000_000_000  # ten trillion yuan: far above any brand, far below BIGINT


class Status(StrEnum):
    PROPOSED = "proposed"
    RECOGNISED = "recognised"
    REVOKED = "revoked"


class Level(StrEnum):
    NATIONAL = "national"
    PROVINCIAL = "provincial"
    CITY_COUNTY = "city-county"


class BodyType(StrEnum):
    """Who cultivates the brand: a regional public brand (a government or association) or an enterprise."""

    REGIONAL_PUBLIC = "regional-public"
    ENTERPRISE = "enterprise"


class BrandRuleError(ValueError):
    """A change the brand's rules do not allow (revoked brand, wrong status…)."""


class StaleVersion(BrandRuleError):
    """Someone changed the brand since the caller read it."""


class VersionRequired(BrandRuleError):
    """A change that does not say which version it applies to."""


class NameFixed(BrandRuleError):
    """A change of the Chinese name of a brand that is no longer proposed."""


class NameTaken(BrandRuleError):
    """A name another brand of the same province already uses."""


@dataclass(frozen=True)
class Category:
    code: str
    zh: str
    en: str


@functools.cache
def categories() -> dict[str, Category]:
    """The industry / skill categories shipped with the service (``data/categories.json``), in file order."""
    document = json.loads(files("labornet.brands").joinpath("data/categories.json").read_text("utf-8"))
    return {item["code"]: Category(item["code"], item["zh"], item["en"]) for item in document["categories"]}


def normalise_name(name: str) -> str:
    """The form in which names are compared: NFKC, case-folded, letters and digits only."""
    return "".join(char for char in unicodedata.normalize("NFKC", name).casefold() if char.isalnum())


def now() -> datetime:
    return datetime.now(UTC)


def new_brand_id(province: str) -> str:
    return f"{province}-B-{uuid.uuid4().hex[:20].upper()}"


# Request fields -------------------------------------------------------------------------------------------------


def _chinese_name(value: str) -> str:
    if not has_cjk(value):
        raise ValueError(f"name_zh {value!r} should be the brand's Chinese name, e.g. 川妹子")
    return value


def _known_category(code: str) -> str:
    if code not in categories():
        known = ", ".join(f"{c.code} ({c.zh})" for c in list(categories().values())[:5])
        raise ValueError(f"category {code!r} is not in the brand category list (e.g. {known}; GET /api/v1/categories)")
    return code


def _trademark_number(value: str) -> str:
    number = "".join(unicodedata.normalize("NFKC", value).split()).removeprefix("第").removesuffix("号")
    if not (number.isascii() and number.isdigit() and 5 <= len(number) <= 12):
        raise ValueError(
            f"trademark registration number {value!r}: expected the 5 to 12 digits of the 商标注册证, e.g. 12345678"
        )
    return number


NameZh = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH),
    AfterValidator(_chinese_name),
]
NameEn = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
CategoryCode = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_known_category)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Skill = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
PersonName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
TrademarkNumber = Annotated[str, AfterValidator(_trademark_number)]
People = Annotated[int, Field(ge=0, le=MAX_PEOPLE)]
Income = Annotated[int, Field(ge=0, le=MAX_INCOME_CNY, description="yuan (CNY) per year")]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class CultivatingBody(BaseModel):
    """The body that cultivates the brand; an enterprise must give its unified social credit code.

    Deprecated request form: a brand shows its body as ``cultivating_body_type``, ``cultivating_body_name`` and
    ``cultivating_body_credit_code``, and requests take that form too (:func:`given_body`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    type: BodyType
    name: ShortText
    credit_code: CreditCodeStr | None = Field(None, validate_default=True)

    @field_validator("credit_code")
    @classmethod
    def _enterprise_has_credit_code(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("type") == BodyType.ENTERPRISE:
            raise ValueError("an enterprise brand needs the enterprise's unified social credit code")
        return value


BODY_FIELDS = ("cultivating_body_type", "cultivating_body_name", "cultivating_body_credit_code")
_BODY_FORMS = (
    "give the cultivating body either as cultivating_body_type, cultivating_body_name and "
    "cultivating_body_credit_code (as the brand shows it) or as the deprecated cultivating_body object, not both"
)
BODY_TYPE_DESCRIPTION = "who cultivates the brand, as the brand shows it; required unless `cultivating_body` is sent"
BODY_NAME_DESCRIPTION = "the cultivating body's name, e.g. 四川省人力资源和社会保障厅; sent with cultivating_body_type"
BODY_CREDIT_CODE_DESCRIPTION = (
    "the enterprise's unified social credit code (GB 32100), required for an enterprise; null or absent otherwise"
)
DEPRECATED_BODY_DESCRIPTION = (
    "Deprecated: the cultivating body as one object {type, name, credit_code}. Send cultivating_body_type, "
    "cultivating_body_name and cultivating_body_credit_code instead, the form in which a brand is shown."
)


def _enterprise_credit_code(value: str | None, info: ValidationInfo) -> str | None:
    if value is None and info.data.get("cultivating_body_type") == BodyType.ENTERPRISE:
        raise ValueError("an enterprise brand needs the enterprise's unified social credit code")
    return value


def given_body(request: BrandDraft | BrandChanges) -> CultivatingBody | None:
    """The cultivating body a request gives, in either form; None when it gives none.

    The flat form is the brand's own (``cultivating_body_*``); it replaces the body whole, like the deprecated
    ``cultivating_body`` object, so type and name come together and an absent credit code is none."""
    flat = request.model_fields_set & set(BODY_FIELDS)
    if "cultivating_body" in request.model_fields_set:
        if flat:
            raise ValueError(_BODY_FORMS)
        return request.cultivating_body
    if not flat:
        return None
    body_type, name = request.cultivating_body_type, request.cultivating_body_name
    if body_type is None or name is None:
        missing = " and ".join(
            n for n, v in (("cultivating_body_type", body_type), ("cultivating_body_name", name)) if v is None
        )
        raise ValueError(f"{missing} missing: the cultivating body changes whole (type, name and credit code)")
    return CultivatingBody.model_construct(type=body_type, name=name, credit_code=request.cultivating_body_credit_code)


class TrainingBase(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: ShortText
    division_code: DivisionCodeStr | None = Field(None, description="where the base is (any province)")


def distinct(values: list[str] | None) -> list[str] | None:
    """The values in their order, each once."""
    return None if values is None else list(dict.fromkeys(values))


class BrandDraft(BaseModel):
    """What an officer of the origin province sends to register a brand.

    Codes are checked for their shape here; that ``division_code`` lies in the origin province and that the
    ``destination_regions`` are federation members is configuration, checked by the use case.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name_zh: NameZh
    name_en: NameEn | None = None
    division_code: DivisionCodeStr = Field(description="the brand's home: a prefecture or county of the province")
    category: CategoryCode
    level: Level
    cultivating_body_type: BodyType | None = Field(None, description=BODY_TYPE_DESCRIPTION)
    cultivating_body_name: ShortText | None = Field(None, description=BODY_NAME_DESCRIPTION)
    cultivating_body_credit_code: CreditCodeStr | None = Field(
        None, validate_default=True, description=BODY_CREDIT_CODE_DESCRIPTION
    )
    cultivating_body: CultivatingBody | None = Field(
        None, description=DEPRECATED_BODY_DESCRIPTION, json_schema_extra={"deprecated": True}
    )
    description: str = Field("", max_length=5000)
    skills: list[Skill] = Field(default_factory=list, max_length=30)
    training_bases: list[TrainingBase] = Field(default_factory=list, max_length=50)
    destination_regions: list[ProvinceCodeStr] = Field(
        default_factory=list, max_length=20, description="member provinces the brand's workers go to"
    )
    people_trained: People = 0
    jobs_supported: People = 0
    annual_labour_income_cny: Income = 0
    spokespersons: list[PersonName] = Field(default_factory=list, max_length=10)
    trademark_number: TrademarkNumber | None = None

    @field_validator("skills", "destination_regions", "spokespersons")
    @classmethod
    def _distinct(cls, values: list[str] | None) -> list[str] | None:
        return distinct(values)

    _enterprise_credit_code = field_validator("cultivating_body_credit_code")(_enterprise_credit_code)

    @model_validator(mode="after")
    def _has_body(self) -> Self:
        body = given_body(self)
        if body is None:
            raise ValueError("the cultivating body is missing: send cultivating_body_type and cultivating_body_name")
        if self.cultivating_body is None:
            self.cultivating_body = body
        return self


class BrandChanges(BaseModel):
    """A partial update; ``version`` (or the If-Match header) must name the version being changed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    version: PositiveInt32 | None = None
    name_zh: NameZh | None = None
    name_en: NameEn | None = None
    division_code: DivisionCodeStr | None = None
    category: CategoryCode | None = None
    level: Level | None = None
    cultivating_body_type: BodyType | None = Field(None, description=BODY_TYPE_DESCRIPTION)
    cultivating_body_name: ShortText | None = Field(None, description=BODY_NAME_DESCRIPTION)
    cultivating_body_credit_code: CreditCodeStr | None = Field(
        None, validate_default=True, description=BODY_CREDIT_CODE_DESCRIPTION
    )
    cultivating_body: CultivatingBody | None = Field(
        None, description=DEPRECATED_BODY_DESCRIPTION, json_schema_extra={"deprecated": True}
    )
    description: str | None = Field(None, max_length=5000)
    skills: list[Skill] | None = Field(None, max_length=30)
    training_bases: list[TrainingBase] | None = Field(None, max_length=50)
    destination_regions: list[ProvinceCodeStr] | None = Field(None, max_length=20)
    people_trained: People | None = None
    jobs_supported: People | None = None
    annual_labour_income_cny: Income | None = None
    spokespersons: list[PersonName] | None = Field(None, max_length=10)
    trademark_number: TrademarkNumber | None = None

    @field_validator("skills", "destination_regions", "spokespersons")
    @classmethod
    def _distinct(cls, values: list[str] | None) -> list[str] | None:
        return distinct(values)

    _enterprise_credit_code = field_validator("cultivating_body_credit_code")(_enterprise_credit_code)

    @model_validator(mode="after")
    def _changes_something(self) -> Self:
        if not self.model_fields_set - {"version"}:
            raise ValueError("the update changes nothing: send at least one field besides version")
        for name in sorted(self.model_fields_set & _REQUIRED_IN_DRAFT):
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be removed, only changed")
        body = given_body(self)
        if body is not None and self.cultivating_body is None:
            self.cultivating_body = body
        return self


_REQUIRED_IN_DRAFT = frozenset(
    {name for name, field in BrandDraft.model_fields.items() if field.is_required()}
    | {"cultivating_body", "cultivating_body_type", "cultivating_body_name"}
)


class RecogniseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: PositiveInt32 | None = None


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: Reason = Field(description="why the brand is revoked (or the proposal withdrawn)")
    version: PositiveInt32 | None = None


def flatten(request: BrandDraft | BrandChanges) -> dict[str, Any]:
    """Request fields as brand columns: every field of a draft, the fields given in changes (the cultivating body
    whole, in whichever form it was given)."""
    columns = request.model_dump(
        mode="json",
        exclude_unset=isinstance(request, BrandChanges),
        exclude={"version", "cultivating_body", *BODY_FIELDS},
    )
    body = request.cultivating_body
    if body is not None:
        columns["cultivating_body_type"] = body.type.value
        columns["cultivating_body_name"] = body.name
        columns["cultivating_body_credit_code"] = body.credit_code
    return columns


# Rules ----------------------------------------------------------------------------------------------------------


def _check_version(current: dict[str, Any], expected_version: int | None) -> None:
    if expected_version is None:
        raise VersionRequired("say which version you change: an If-Match header or a version field")
    if expected_version != current["version"]:
        raise StaleVersion(
            f"brand {current['id']} is at version {current['version']}, not {expected_version}; reload and retry"
        )


def check_update(current: dict[str, Any], changes: BrandChanges, expected_version: int | None) -> None:
    if current["status"] == Status.REVOKED:
        raise BrandRuleError(f"brand {current['id']} is revoked; a revoked brand does not change")
    _check_version(current, expected_version)
    renamed = changes.name_zh is not None and normalise_name(changes.name_zh) != normalise_name(current["name_zh"])
    if renamed and current["status"] != Status.PROPOSED:
        raise NameFixed(
            f"brand {current['id']} was recognised as {current['name_zh']}; the Chinese name of a recognised brand "
            "does not change (revoke it and register the new name)"
        )


def check_recognise(current: dict[str, Any], expected_version: int | None) -> None:
    if current["status"] != Status.PROPOSED:
        raise BrandRuleError(f"brand {current['id']} is {current['status']}; only a proposed brand is recognised")
    _check_version(current, expected_version)


def check_revoke(current: dict[str, Any], expected_version: int | None) -> None:
    if current["status"] == Status.REVOKED:
        raise BrandRuleError(f"brand {current['id']} is already revoked")
    _check_version(current, expected_version)


# The brand on the wire ------------------------------------------------------------------------------------------


UtcTime = Annotated[datetime, AfterValidator(as_utc)]

Text18 = Annotated[str, StringConstraints(max_length=18)]
Text20 = Annotated[str, StringConstraints(max_length=20)]
Text50 = Annotated[str, StringConstraints(max_length=50)]
Text100 = Annotated[str, StringConstraints(max_length=100)]
Text200 = Annotated[str, StringConstraints(max_length=200)]
Text1000 = Annotated[str, StringConstraints(max_length=1000)]
Text5000 = Annotated[str, StringConstraints(max_length=5000)]
ProvinceCode = Annotated[str, StringConstraints(pattern=r"^\d{2}0000$")]
CategoryText = Annotated[str, StringConstraints(min_length=1, max_length=40)]


class TrainingBaseRecord(BaseModel):
    """A training base as events carry it (lenient like the record: unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    name: Text200 = Field(min_length=1)
    division_code: str | None = Field(None, pattern=r"^\d{6}$")


class BrandRecord(BaseModel):
    """A brand as events carry it and the API shows it (schema of the four ``brand.*.v1`` events).

    Receivers ignore fields they do not know, so a later version may add optional fields. ``category_name`` and
    ``division_name`` travel with the brand: a replica never depends on its own copy of those lists.
    """

    model_config = ConfigDict(extra="ignore")
    id: str = Field(max_length=40)
    origin_province: ProvinceCode
    name_zh: Text50 = Field(min_length=1)
    name_en: Text100 | None
    division_code: str = Field(pattern=r"^\d{6}$")
    division_name: Text100
    category: CategoryText
    category_name: Text100
    level: Level
    cultivating_body_type: BodyType
    cultivating_body_name: Text200
    cultivating_body_credit_code: Text18 | None
    description: Text5000
    skills: list[Text50]
    training_bases: list[TrainingBaseRecord]
    destination_regions: list[ProvinceCode]
    people_trained: int = Field(ge=0, le=MAX_PEOPLE)
    jobs_supported: int = Field(ge=0, le=MAX_PEOPLE)
    annual_labour_income_cny: int = Field(ge=0, le=MAX_INCOME_CNY)
    spokespersons: list[Text50]
    trademark_number: Text20 | None
    status: Status
    registered_at: UtcTime
    recognised_at: UtcTime | None
    revoked_at: UtcTime | None
    revocation_reason: Text1000 | None
    updated_at: UtcTime
    version: PositiveInt32

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.id.startswith(f"{self.origin_province}-B-"):
            raise ValueError(f"brand id {self.id} does not belong to province {self.origin_province}")
        if self.division_code[:2] != self.origin_province[:2]:
            raise ValueError(f"brand {self.id}: division {self.division_code} is outside {self.origin_province}")
        if not normalise_name(self.name_zh):
            raise ValueError(f"brand {self.id}: name_zh {self.name_zh!r} has no letters or characters")
        _chinese_name(self.name_zh)
        if self.cultivating_body_credit_code is not None:
            validate_credit_code(self.cultivating_body_credit_code)
        elif self.cultivating_body_type == BodyType.ENTERPRISE:
            raise ValueError(f"brand {self.id}: an enterprise brand needs the enterprise's unified social credit code")
        if self.trademark_number is not None and _trademark_number(self.trademark_number) != self.trademark_number:
            raise ValueError(f"brand {self.id}: trademark number {self.trademark_number!r} is not 5 to 12 digits")
        if self.status == Status.RECOGNISED and self.recognised_at is None:
            raise ValueError(f"brand {self.id} is recognised without recognised_at")
        if self.status == Status.REVOKED and (self.revoked_at is None or not self.revocation_reason):
            raise ValueError(f"brand {self.id} is revoked without revoked_at and a reason")
        return self


RECORD_FIELDS = tuple(BrandRecord.model_fields)


# Which statuses each event type can carry: registering proposes version 1, recognising and revoking set their
# status, an update changes a brand that is not revoked.
_EVENT_STATUSES = {
    REGISTERED: (Status.PROPOSED,),
    UPDATED: (Status.PROPOSED, Status.RECOGNISED),
    RECOGNISED: (Status.RECOGNISED,),
    REVOKED: (Status.REVOKED,),
}


def check_replicated(event_type: str, row: Mapping[str, Any], held: Mapping[str, Any] | None) -> None:
    """A replicated brand follows the life the origin's API allows; :class:`BrandRuleError` saying how it does not.

    ``row`` is the brand as the event of ``event_type`` carries it, ``held`` the replica's copy (if any). The
    event type must fit the status and version it carries; against an older held copy, a brand never leaves
    ``revoked``, never goes back to ``proposed``, and keeps its Chinese name once recognised. These hold across
    any number of versions, so a replica that missed events judges a newer one just as well."""
    statuses = _EVENT_STATUSES.get(event_type)
    if statuses is None:
        raise BrandRuleError(f"{event_type} is not a brand event")
    if row["status"] not in statuses:
        raise BrandRuleError(f"{event_type} cannot carry brand {row['id']} with status {row['status']}")
    if (event_type == REGISTERED) != (row["version"] == 1):
        raise BrandRuleError(f"{event_type} cannot carry version {row['version']} of brand {row['id']}")
    if held is None or row["version"] <= held["version"]:
        return  # new to this replica, or not newer than its copy (which then stays)
    if held["status"] == Status.REVOKED:
        raise BrandRuleError(f"brand {row['id']} is revoked; a revoked brand does not change")
    if held["status"] == Status.RECOGNISED and row["status"] == Status.PROPOSED:
        raise BrandRuleError(f"brand {row['id']} is recognised; it is not proposed again")
    if held["status"] != Status.PROPOSED and normalise_name(row["name_zh"]) != normalise_name(held["name_zh"]):
        raise NameFixed(
            f"brand {row['id']} was recognised as {held['name_zh']}; the Chinese name of a recognised brand does "
            f"not change (the event renames it {row['name_zh']})"
        )
