"""The demo data set is valid for every province: each vacancy, record, brand and case body passes the models
its service validates it with, and names a division of its own province (so `make up` never stops half-loaded).
The three-province path through the real APIs is walked by `make smoke` in CI."""

from __future__ import annotations

import pytest

from labornet.brands.domain.brand import BrandDraft
from labornet.insurance.service_layer.records import PersonIn
from labornet.jobs.domain.vacancy import VacancyDraft
from labornet.rights.domain.case import CaseDraft
from labornet.shared import demo
from labornet.shared.divisions import load_divisions
from labornet.shared.provinces import load_registry


@pytest.mark.parametrize("n", range(len(demo.VACANCIES)))
def test_every_demo_vacancy_is_valid_in_its_province(n: int) -> None:
    row = demo.VACANCIES[n]
    body = demo.vacancy_body(row, n)
    VacancyDraft.model_validate(body)
    assert load_divisions().resolve(row[0], body["division_code"]).code == body["division_code"]


def test_the_demo_covers_every_member_province() -> None:
    assert {row[0] for row in demo.VACANCIES} == set(load_registry().codes())


def test_demo_records_brands_and_case_are_valid() -> None:
    for n in range(4):
        PersonIn.model_validate(demo.insured_person(n, claiming=n % 2 == 0))
    for brand in demo.BRANDS:
        body = {k: v for k, v in brand.items() if k != "origin_province"}
        body["cultivating_body"] = {"type": "regional-public", "name": demo.PUBLIC_BODIES[brand["origin_province"]]}
        BrandDraft.model_validate(body)
        load_divisions().resolve(brand["origin_province"], body["division_code"])
    CaseDraft.model_validate(demo.wage_case_body(7))
