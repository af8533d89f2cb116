"""Resident identity numbers, unified social credit codes, division codes, masking and the generators."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from labornet.shared.identifiers import (
    CreditCodeStr,
    DivisionCodeStr,
    InvalidIdentifier,
    ResidentIdStr,
    birth_date,
    division_code,
    is_male,
    make_credit_code,
    make_resident_id,
    mask_name,
    mask_phone,
    mask_resident_id,
    province_of_division,
    validate_credit_code,
    validate_division_code,
    validate_resident_id,
)
from labornet.shared.problems import install_problem_handlers

# Independent restatements of the two check-character formulas, pinned below against published numbers.
GB11643_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
GB32100_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
GB32100_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]


def gb11643_check(body: str) -> str:
    total = 0
    for digit, weight in zip(body, GB11643_WEIGHTS, strict=True):
        total += int(digit) * weight
    return "10X98765432"[total % 11]


def gb32100_check(body: str) -> str:
    total = 0
    for char, weight in zip(body, GB32100_WEIGHTS, strict=True):
        total += GB32100_ALPHABET.index(char) * weight
    value = 31 - total % 31
    return GB32100_ALPHABET[0 if value == 31 else value]


DOCUMENTED_RESIDENT_ID = "11010519491231002X"
DOCUMENTED_CREDIT_CODE = "91350100M000100Y43"
# Codes of well-known companies as printed on their business licences.
PUBLISHED_CREDIT_CODES = ["9144030071526726XG", "914403001922038216", "91330100716105852F"]


# --- the reference formulas themselves ----------------------------------------------------------------------


def test_gb11643_arithmetic_of_the_documented_example() -> None:
    # 1·7 + 1·9 + 0·10 + 1·5 + 0·8 + 5·4 + 1·2 + 9·1 + 4·6 + 9·3 + 1·7 + 2·9 + 3·10 + 1·5 + 0·8 + 0·4 + 2·2
    total = sum(int(d) * w for d, w in zip(DOCUMENTED_RESIDENT_ID[:17], GB11643_WEIGHTS, strict=True))
    assert total == 167
    assert total % 11 == 2
    assert gb11643_check(DOCUMENTED_RESIDENT_ID[:17]) == "X"
    # The second example of GB 11643-1999 (born 1880, so it fails our date rule, but its check digit is 4).
    assert gb11643_check("44052418800101001") == "4"


def test_gb32100_arithmetic_of_the_documented_example() -> None:
    assert gb32100_check(DOCUMENTED_CREDIT_CODE[:17]) == "3"
    for code in PUBLISHED_CREDIT_CODES:
        assert gb32100_check(code[:17]) == code[17]


# --- resident identity number -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        (DOCUMENTED_RESIDENT_ID, DOCUMENTED_RESIDENT_ID),
        ("11010519491231002x", DOCUMENTED_RESIDENT_ID),
        (" 110105 19491231 002x ", DOCUMENTED_RESIDENT_ID),
        # full-width digits and X, as Chinese input methods type them
        ("".join(chr(ord(c) + 0xFEE0) for c in DOCUMENTED_RESIDENT_ID), DOCUMENTED_RESIDENT_ID),
        ("510105199003071233", "510105199003071233"),
        ("320102200002290013", "320102200002290013"),  # 29 February of a leap year
    ],
)
def test_valid_resident_ids_are_normalised(raw: str, normalised: str) -> None:
    assert validate_resident_id(raw) == normalised


@pytest.mark.parametrize(
    "body",
    ["11010519491231002", "51010519900307123", "64010419851111000", "35020320010101999", "82000019000101001"],
)
def test_resident_check_character_is_the_only_one_accepted(body: str) -> None:
    expected = gb11643_check(body)
    assert validate_resident_id(body + expected) == body + expected
    for wrong in sorted(set("0123456789X") - {expected}):
        with pytest.raises(InvalidIdentifier) as info:
            validate_resident_id(body + wrong)
        assert str(info.value) == (
            f"resident identity number {body}{wrong}: check character should be {expected}, got {wrong}"
        )


def test_every_check_character_occurs() -> None:
    """Sixty consecutive sequences of one birth date produce all eleven check characters."""
    seen = set()
    for sequence in range(60):
        rid = make_resident_id("510104", date(1988, 8, 8), sequence)
        assert rid[17] == gb11643_check(rid[:17])
        seen.add(rid[17])
    assert seen == set("0123456789X")


def _with_check(body: str) -> str:
    return body + gb11643_check(body)


TOMORROW = date.today() + timedelta(days=1)

PREFIXES = "(11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71, 81 or 82)"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("110105194912310021", "check character should be X, got 1"),
        ("11010519491231002", "expected 18 characters, got 17"),
        ("11010519491231002X1", "expected 18 characters, got 19"),
        ("110105491231002", "expected 18 characters, got 15"),
        ("11010519491231A02X", "character 15 should be a digit, got 'A'"),
        ("X10105194912310021", "character 1 should be a digit, got 'X'"),
        ("11010519491231002Y", "check character should be a digit or X, got 'Y'"),
        (_with_check("11010519491331002"), "birth date 19491331 is not a real date"),
        (_with_check("11010519490230002"), "birth date 19490230 is not a real date"),
        (_with_check("11010519000229002"), "birth date 19000229 is not a real date"),  # 1900 was not leap
        ("440524188001010014", "birth date 18800101 is before 1900"),
        (_with_check(f"110105{TOMORROW:%Y%m%d}002"), f"birth date {TOMORROW:%Y%m%d} is in the future"),
        (
            _with_check("99010519491231002"),
            f"address code 990105 should start with a province prefix {PREFIXES}, got 99",
        ),
        (
            _with_check("19010519491231002"),
            f"address code 190105 should start with a province prefix {PREFIXES}, got 19",
        ),
    ],
)
def test_invalid_resident_ids_say_what_is_wrong(value: str, problem: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        validate_resident_id(value)
    assert str(info.value) == f"resident identity number {value}: {problem}"
    assert info.value.kind == "resident identity number"
    assert info.value.problem == problem
    assert isinstance(info.value, ValueError)


def test_an_empty_value_is_named_in_the_message() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        validate_resident_id("")
    assert str(info.value) == "resident identity number (empty): expected 18 characters, got 0"


def test_a_birth_date_of_today_is_accepted() -> None:
    rid = _with_check(f"110105{date.today():%Y%m%d}002")
    assert validate_resident_id(rid) == rid


def test_a_very_long_value_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        validate_resident_id("1" * 500)
    assert str(info.value) == f"resident identity number {'1' * 40}…: expected 18 characters, got 500"
    assert info.value.value == "1" * 500


@pytest.mark.parametrize(
    ("rid", "born", "male", "division"),
    [
        (DOCUMENTED_RESIDENT_ID, date(1949, 12, 31), False, "110105"),
        ("11010519491231002x", date(1949, 12, 31), False, "110105"),
        ("510105199003071233", date(1990, 3, 7), True, "510105"),
        ("320102200002290013", date(2000, 2, 29), True, "320102"),
    ],
)
def test_resident_id_helpers(rid: str, born: date, male: bool, division: str) -> None:
    assert birth_date(rid) == born
    assert is_male(rid) is male
    assert division_code(rid) == division


@pytest.mark.parametrize("helper", [birth_date, is_male, division_code])
def test_resident_id_helpers_refuse_invalid_numbers(helper: Callable[[str], object]) -> None:
    with pytest.raises(InvalidIdentifier, match="check character should be X, got 1"):
        helper("110105194912310021")


# --- unified social credit code -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        (DOCUMENTED_CREDIT_CODE, DOCUMENTED_CREDIT_CODE),
        ("91350100m000100y43", DOCUMENTED_CREDIT_CODE),
        (" 91350100 M000100Y43 ", DOCUMENTED_CREDIT_CODE),
        *[(code, code) for code in PUBLISHED_CREDIT_CODES],
        ("9144030071526726xg", "9144030071526726XG"),
    ],
)
def test_valid_credit_codes_are_normalised(raw: str, normalised: str) -> None:
    assert validate_credit_code(raw) == normalised


@pytest.mark.parametrize("code", [DOCUMENTED_CREDIT_CODE, *PUBLISHED_CREDIT_CODES])
def test_credit_check_character_is_the_only_one_accepted(code: str) -> None:
    body, expected = code[:17], code[17]
    for wrong in GB32100_ALPHABET.replace(expected, ""):
        with pytest.raises(InvalidIdentifier) as info:
            validate_credit_code(body + wrong)
        message = f"unified social credit code {body}{wrong}: check character should be {expected}"
        assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("91350100M000100Y44", "unified social credit code 91350100M000100Y44: check character should be 3"),
        ("91350100M000100Y4", "unified social credit code 91350100M000100Y4: expected 18 characters, got 17"),
        (
            "91350100M000100Y433",
            "unified social credit code 91350100M000100Y433: expected 18 characters, got 19",
        ),
        ("", "unified social credit code (empty): expected 18 characters, got 0"),
        *[
            (
                f"91350100M000100{letter}43",
                f"unified social credit code 91350100M000100{letter}43: character 16 is {letter!r}, "
                "but the letters I, O, S, V and Z are not allowed",
            )
            for letter in "IOSVZ"
        ],
        (
            "91350100O000100Y43",
            "unified social credit code 91350100O000100Y43: character 9 is 'O', "
            "but the letters I, O, S, V and Z are not allowed",
        ),
        (
            "9135010-M000100Y43",
            "unified social credit code 9135010-M000100Y43: character 8 is '-'; "
            "expected a digit or a capital letter A-Y other than I, O, S, V and Z",
        ),
        (
            "91350100M000100中43",
            "unified social credit code 91350100M000100中43: character 16 is '中'; "
            "expected a digit or a capital letter A-Y other than I, O, S, V and Z",
        ),
        (
            "91AB0100M000100Y43",
            "unified social credit code 91AB0100M000100Y43: "
            "characters 3-8 should be the 6-digit administrative division code, got AB0100",
        ),
        (
            "9135010MM000100Y43",
            "unified social credit code 9135010MM000100Y43: "
            "characters 3-8 should be the 6-digit administrative division code, got 35010M",
        ),
    ],
)
def test_invalid_credit_codes_say_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        validate_credit_code(value)
    assert str(info.value) == message
    assert info.value.kind == "unified social credit code"


def test_credit_check_value_31_becomes_0() -> None:
    """A body whose weighted sum is a multiple of 31 takes check character 0, not an out-of-range 31."""
    body = "91350100MA7000000"
    total = sum(GB32100_ALPHABET.index(c) * w for c, w in zip(body, GB32100_WEIGHTS, strict=True))
    assert total % 31 == 0
    assert validate_credit_code(body + "0") == body + "0"
    with pytest.raises(InvalidIdentifier) as info:
        validate_credit_code(body + "1")
    assert str(info.value) == f"unified social credit code {body}1: check character should be 0"


# --- administrative division code ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "province"),
    [
        ("510100", "510000"),
        ("510104", "510000"),
        ("330106", "330000"),
        ("540000", "540000"),
        ("820000", "820000"),
    ],
)
def test_division_codes_and_their_province(code: str, province: str) -> None:
    assert validate_division_code(code) == code
    assert province_of_division(code) == province


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("51010", "administrative division code 51010: expected 6 digits, e.g. 510100"),
        ("5101000", "administrative division code 5101000: expected 6 digits, e.g. 510100"),
        ("5101a0", "administrative division code 5101a0: expected 6 digits, e.g. 510100"),
        ("", "administrative division code (empty): expected 6 digits, e.g. 510100"),
        (
            "990000",
            "administrative division code 990000: code 990000 should start with a province prefix "
            "(11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71, 81 or 82), got 99",
        ),
        (
            "000000",
            "administrative division code 000000: code 000000 should start with a province prefix "
            "(11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71, 81 or 82), got 00",
        ),
    ],
)
def test_invalid_division_codes(value: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        validate_division_code(value)
    assert str(info.value) == message
    with pytest.raises(InvalidIdentifier):
        province_of_division(value)


# --- masking ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("51010519900307123X", "5101**********123X"),
        (DOCUMENTED_RESIDENT_ID, "1101**********002X"),
        ("510105 19900307 123X", "5101**********123X"),
        ("51010519900307123", "510**********7123"),  # one digit short: still ten hidden
        ("5101051990030712345", "5101***********2345"),
        ("5101051990", "**********"),
        ("", ""),
    ],
)
def test_mask_resident_id(value: str, masked: str) -> None:
    assert mask_resident_id(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("13812345678", "138****5678"),
        ("138 1234 5678", "138****5678"),
        ("+8613812345678", "+86*******5678"),
        ("028-87654321", "028*****4321"),
        ("87654321", "87****21"),
        ("1234", "****"),
        ("", ""),
    ],
)
def test_mask_phone(value: str, masked: str) -> None:
    assert mask_phone(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("张三丰", "张**"),
        ("李四", "李*"),
        (" 欧阳娜娜 ", "欧***"),
        ("王", "*"),
        ("", ""),
        ("Li Ming", "L******"),
    ],
)
def test_mask_name(value: str, masked: str) -> None:
    assert mask_name(value) == masked


MALFORMED = [
    "",
    "x",
    "12",
    "abcdef",
    "123456789",
    "1234567890",
    "中文身份证号码",
    "💥" * 7,
    "1" * 17,
    "2" * 40,
]


@pytest.mark.parametrize("value", MALFORMED)
@pytest.mark.parametrize(
    ("mask", "most_shown", "least_hidden"),
    [(mask_resident_id, 8, 10), (mask_phone, 7, 4), (mask_name, 1, 1)],
)
def test_masking_never_raises_and_never_reveals_more_than_its_rule(
    mask: Callable[[str], str], most_shown: int, least_hidden: int, value: str
) -> None:
    masked = mask(value)
    assert len(masked) == len(value)
    shown = [(i, c) for i, c in enumerate(masked) if c != "*"]
    assert all(value[i] == c for i, c in shown)
    assert len(shown) <= most_shown
    assert len(masked) - len(shown) >= min(len(value), least_hidden)


# --- generators ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("division", "birth", "sequence"),
    [
        ("510105", date(1990, 3, 7), 123),
        ("500103", date(1975, 1, 1), 0),
        ("520102", date(2000, 2, 29), 999),
        ("540102", date(1900, 1, 1), 44),
        ("640104", date.today(), 7),
    ],
)
def test_make_resident_id_round_trips(division: str, birth: date, sequence: int) -> None:
    rid = make_resident_id(division, birth, sequence)
    assert rid == f"{division}{birth:%Y%m%d}{sequence:03d}{gb11643_check(rid[:17])}"
    assert validate_resident_id(rid) == rid
    assert birth_date(rid) == birth
    assert division_code(rid) == division
    assert is_male(rid) is (sequence % 2 == 1)


def test_make_resident_id_pins_known_values() -> None:
    assert make_resident_id("110105", date(1949, 12, 31), 2) == DOCUMENTED_RESIDENT_ID
    assert make_resident_id("510105", date(1990, 3, 7), 123) == "510105199003071233"


@pytest.mark.parametrize("sequence", [-1, 1000])
def test_make_resident_id_refuses_a_sequence_out_of_range(sequence: int) -> None:
    with pytest.raises(ValueError, match=f"sequence must be between 0 and 999, got {sequence}"):
        make_resident_id("510105", date(1990, 3, 7), sequence)


@pytest.mark.parametrize(
    ("division", "birth", "message"),
    [
        ("51010", date(1990, 3, 7), "administrative division code 51010: expected 6 digits"),
        ("990105", date(1990, 3, 7), "administrative division code 990105: code 990105 should start with"),
        ("510105", TOMORROW, "is in the future"),
        ("510105", date(1899, 12, 31), "birth date 18991231 is before 1900"),
        ("510105", date(999, 1, 1), "birth date 09990101 is before 1900"),
    ],
)
def test_make_resident_id_refuses_invalid_parts(division: str, birth: date, message: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        make_resident_id(division, birth, 1)
    assert message in str(info.value)


@pytest.mark.parametrize("code", [DOCUMENTED_CREDIT_CODE, *PUBLISHED_CREDIT_CODES])
def test_make_credit_code_completes_published_codes(code: str) -> None:
    assert make_credit_code(code[:17]) == code
    assert make_credit_code(code[:17].lower()) == code


@pytest.mark.parametrize(
    "prefix17", ["91510100MA6000001", "12330000002482061", "Y1320102000000000", "93640104QQQQQQQQQ"]
)
def test_make_credit_code_round_trips(prefix17: str) -> None:
    code = make_credit_code(prefix17)
    assert code == prefix17 + gb32100_check(prefix17)
    assert validate_credit_code(code) == code


@pytest.mark.parametrize(
    ("prefix17", "message"),
    [
        ("91350100M000100Y", "91350100M000100Y: expected 17 characters before the check character, got 16"),
        ("91350100M000100Y43", "expected 17 characters before the check character, got 18"),
        ("91350100M000100I4", "character 16 is 'I', but the letters I, O, S, V and Z are not allowed"),
        (
            "91ABCDEFM000100Y4",
            "characters 3-8 should be the 6-digit administrative division code, got ABCDEF",
        ),
    ],
)
def test_make_credit_code_refuses_bad_prefixes(prefix17: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        make_credit_code(prefix17)
    assert message in str(info.value)


# --- pydantic and FastAPI -----------------------------------------------------------------------------------


class Complaint(BaseModel):
    complainant_id: ResidentIdStr
    employer_code: CreditCodeStr
    work_division: DivisionCodeStr


VALID_COMPLAINT = {
    "complainant_id": DOCUMENTED_RESIDENT_ID,
    "employer_code": DOCUMENTED_CREDIT_CODE,
    "work_division": "510104",
}


def test_annotated_types_normalise_valid_values() -> None:
    complaint = Complaint(
        complainant_id="11010519491231002x", employer_code="91350100m000100y43", work_division=" 510104 "
    )
    assert complaint.complainant_id == DOCUMENTED_RESIDENT_ID
    assert complaint.employer_code == DOCUMENTED_CREDIT_CODE
    assert complaint.work_division == "510104"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "complainant_id",
            "110105194912310021",
            "resident identity number 110105194912310021: check character should be X, got 1",
        ),
        (
            "employer_code",
            "91350100M000100Y44",
            "unified social credit code 91350100M000100Y44: check character should be 3",
        ),
        ("work_division", "9901", "administrative division code 9901: expected 6 digits, e.g. 510100"),
    ],
)
def test_annotated_types_raise_our_message(field: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Complaint.model_validate({**VALID_COMPLAINT, field: value})
    errors = info.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"] == (field,)
    assert isinstance(errors[0]["ctx"]["error"], InvalidIdentifier)
    assert str(errors[0]["ctx"]["error"]) == message
    assert message in str(info.value)


def test_fastapi_answers_422_with_our_message() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/complaints")
    async def file_complaint(complaint: Complaint) -> dict[str, str]:
        return {"employer_code": complaint.employer_code}

    client = TestClient(app)
    accepted = client.post("/complaints", json={**VALID_COMPLAINT, "employer_code": "91350100m000100y43"})
    assert accepted.status_code == 200
    assert accepted.json() == {"employer_code": DOCUMENTED_CREDIT_CODE}

    refused = client.post("/complaints", json={**VALID_COMPLAINT, "employer_code": "91350100M000100Y44"})
    assert refused.status_code == 422
    errors = refused.json()["errors"]
    assert [e["field"] for e in errors] == ["employer_code"]
    message = "unified social credit code 91350100M000100Y44: check character should be 3"
    assert errors[0]["message"] == message
