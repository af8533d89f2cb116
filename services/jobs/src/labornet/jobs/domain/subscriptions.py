"""Worker subscriptions: what a worker wants to hear about, and whether a vacancy is it.

The criteria of a subscription combine with AND; the values inside one criterion combine with OR (any of the
listed occupations, any of the listed provinces…), except keywords, which must all occur. An empty list means
"any". Only open vacancies match.

* ``occupation_codes`` — prefix of the vacancy's occupation code: ``5`` and ``51`` both match ``5120``;
* ``provinces`` — the owner (posting) province, a member of the federation;
* ``division_codes`` — GB/T 2260 codes matched on their significant digits: ``510000`` matches any division of
  Sichuan (``51…``), ``510100`` any district of Chengdu (``5101…``), ``510104`` exactly Jinjiang district;
* ``min_salary`` — the vacancy's range reaches it (``salary_max >= min_salary``);
* ``keywords`` — every search token of every keyword (:func:`labornet.jobs.domain.text.tokens`) occurs among the
  tokens of the vacancy's title, description, occupation name and skills; a one-character Chinese keyword (``厨``)
  matches inside a word (``厨师``), since bigram tokens never hold a single character;
* ``target_group`` — one of the vacancy's target groups.

Whether a province is a member needs the federation's registry, which is configuration: pass it as validation
context (``SubscriptionCriteria.model_validate(data, context={"registry": registry})``). Without it only the shape
of a province code is checked.
"""

from __future__ import annotations

import functools
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, model_validator

from labornet.jobs.domain.text import is_cjk, tokens
from labornet.jobs.domain.vacancy import Status, TargetGroup
from labornet.shared.identifiers import DivisionCodeStr, validate_division_code
from labornet.shared.provinces import ProvinceRegistry, UnknownProvince

MAX_CODES = 50
MAX_KEYWORDS = 10
MAX_KEYWORD_LENGTH = 50
MAX_OCCUPATION_CODE_LENGTH = 10


def _occupation_code(value: str) -> str:
    code = "".join(unicodedata.normalize("NFKC", value).split())
    if not (1 <= len(code) <= MAX_OCCUPATION_CODE_LENGTH and code.isascii() and code.isdigit()):
        raise ValueError(
            f"occupation code {value!r}: expected 1 to {MAX_OCCUPATION_CODE_LENGTH} digits, an ISCO-08 code or a "
            "prefix of one, e.g. 5 (service and sales workers) or 5120 (cooks)"
        )
    return code


def _province_code(value: str, info: ValidationInfo) -> str:
    code = validate_division_code(value)
    if not code.endswith("0000"):
        raise ValueError(f"province {code}: expected a province-level code ending in 0000, e.g. {code[:2]}0000")
    registry = (info.context or {}).get("registry")
    if isinstance(registry, ProvinceRegistry):
        try:
            registry.get(code)
        except UnknownProvince as exc:
            raise ValueError(str(exc)) from None
    return code


def _keyword(value: str) -> str:
    if not tokens(value):
        raise ValueError(f"keyword {value!r} has no letters, digits or Chinese characters to search for")
    return value


OccupationCode = Annotated[str, AfterValidator(_occupation_code)]
ProvinceCode = Annotated[str, AfterValidator(_province_code)]
Keyword = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_KEYWORD_LENGTH),
    AfterValidator(_keyword),
]


class SubscriptionCriteria(BaseModel):
    """What a worker subscribes to; see the module documentation for how each criterion matches."""

    model_config = ConfigDict(extra="forbid")

    occupation_codes: list[OccupationCode] = Field(
        default_factory=list,
        max_length=MAX_CODES,
        description="occupation codes or prefixes of them ('5' matches '5120'); any of them",
    )
    provinces: list[ProvinceCode] = Field(
        default_factory=list, max_length=MAX_CODES, description="posting provinces (e.g. 330000); any of them"
    )
    division_codes: list[DivisionCodeStr] = Field(
        default_factory=list,
        max_length=MAX_CODES,
        description="6-digit division codes where the work is; 510000 = the province, 510100 = the city",
    )
    min_salary: int | None = Field(
        None, ge=0, le=10_000_000, description="the vacancy's salary_max must reach this (yuan per month)"
    )
    keywords: list[Keyword] = Field(
        default_factory=list,
        max_length=MAX_KEYWORDS,
        description=f"all must occur in the vacancy (at most {MAX_KEYWORDS}, {MAX_KEYWORD_LENGTH} characters each)",
    )
    target_group: TargetGroup | None = Field(None, description="one of the vacancy's target groups")

    @model_validator(mode="after")
    def _at_least_one_criterion(self) -> SubscriptionCriteria:
        if not (
            self.occupation_codes
            or self.provinces
            or self.division_codes
            or self.min_salary is not None
            or self.keywords
            or self.target_group is not None
        ):
            raise ValueError(
                "a subscription needs at least one criterion: occupation_codes, provinces, division_codes, "
                "min_salary, keywords or target_group"
            )
        return self


def significant_prefix(division_code: str) -> str:
    """The digits of a division code that matter: ``510000`` → ``51``, ``510100`` → ``5101``, ``510104`` itself."""
    if division_code.endswith("0000"):
        return division_code[:2]
    if division_code.endswith("00"):
        return division_code[:4]
    return division_code


@functools.lru_cache(maxsize=4096)
def _keyword_tokens(keyword: str) -> frozenset[str]:
    return frozenset(tokens(keyword))


def vacancy_matcher(vacancy: Mapping[str, Any]) -> Callable[[SubscriptionCriteria], bool]:
    """A test of criteria against one vacancy (a mapping with the ``vacancy`` table's columns).

    Use it to check many subscriptions against the same vacancy: the vacancy's text is tokenised once, and only
    if some subscription has keywords.
    """
    if vacancy["status"] != Status.OPEN:
        return lambda _criteria: False
    occupation = str(vacancy["occupation_code"])
    division = str(vacancy["division_code"])
    target_groups = set(vacancy.get("target_groups") or ())
    text: tuple[set[str], set[str]] | None = None

    def vacancy_text() -> tuple[set[str], set[str]]:
        nonlocal text
        if text is None:
            parts: Iterable[str] = (
                str(vacancy["title"]),
                str(vacancy["description"]),
                str(vacancy["occupation_name"]),
                *(str(skill) for skill in vacancy.get("skills") or ()),
            )
            words = {token for part in parts for token in tokens(part)}
            text = words, {char for word in words if is_cjk(word) for char in word}
        return text

    def found(token: str) -> bool:
        words, cjk_characters = vacancy_text()
        return token in words or (len(token) == 1 and token in cjk_characters)

    def accepts(criteria: SubscriptionCriteria) -> bool:
        return (
            (not criteria.provinces or vacancy["owner_province"] in criteria.provinces)
            and (criteria.min_salary is None or vacancy["salary_max"] >= criteria.min_salary)
            and (criteria.target_group is None or criteria.target_group in target_groups)
            and (not criteria.occupation_codes or any(occupation.startswith(c) for c in criteria.occupation_codes))
            and (
                not criteria.division_codes
                or any(division.startswith(significant_prefix(c)) for c in criteria.division_codes)
            )
            and all(found(token) for keyword in criteria.keywords for token in _keyword_tokens(keyword))
        )

    return accepts


T = TypeVar("T")


class CriteriaIndex(Generic[T]):
    """Many subscriptions' criteria, looked up by a vacancy's owner province and occupation code.

    :meth:`candidates` gives every item whose provinces and occupation codes admit the vacancy (the other criteria
    are not looked at), so a vacancy is tested by :func:`vacancy_matcher` against the subscriptions for its province
    and kind of work rather than against all of them; what matches is the same."""

    def __init__(self, items: Iterable[tuple[T, SubscriptionCriteria]]) -> None:
        self._items = list(items)
        # (province or None for "any", occupation code or prefix or None for "any") -> positions in _items
        self._positions: defaultdict[tuple[str | None, str | None], list[int]] = defaultdict(list)
        for position, (_, criteria) in enumerate(self._items):
            for province in criteria.provinces or (None,):
                for code in criteria.occupation_codes or (None,):
                    self._positions[province, code].append(position)

    def candidates(self, vacancy: Mapping[str, Any]) -> list[tuple[T, SubscriptionCriteria]]:
        """The items that may accept ``vacancy`` (a mapping with the ``vacancy`` table's columns), in their order."""
        occupation = str(vacancy["occupation_code"])
        codes = (None, *(occupation[:length] for length in range(1, len(occupation) + 1)))
        found: set[int] = set()
        for province in (str(vacancy["owner_province"]), None):
            for code in codes:
                found.update(self._positions.get((province, code), ()))
        return [self._items[position] for position in sorted(found)]


def matches(criteria: SubscriptionCriteria, vacancy: Mapping[str, Any]) -> bool:
    """Whether ``vacancy`` (a mapping with the ``vacancy`` table's columns) is what ``criteria`` asks for."""
    return vacancy_matcher(vacancy)(criteria)
