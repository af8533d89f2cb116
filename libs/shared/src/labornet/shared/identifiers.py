"""Validation, masking and generation of the identifiers LaborNet exchanges.

* Resident identity number (居民身份证号码, GB 11643, ISO 7064 MOD 11-2): 6-digit address code, 8-digit birth
  date, 3-digit sequence (odd = male) and a check character.
* Unified social credit code (统一社会信用代码, GB 32100-2015) of employers: 18 characters over a 31-symbol
  alphabet; characters 3-8 are the administrative division code of the registering authority.
* Administrative division code (GB/T 2260): 6 digits, the first two name the province.

Validators return the normalised value (whitespace removed, full-width characters folded to ASCII) and raise
:class:`InvalidIdentifier` with a message that says exactly what is wrong. Use the ``...Str`` annotated types
in request models so that a bad identifier becomes a 422 carrying that message.

Personal identifiers are masked before they reach a log or anyone but the person and the handling officer
(``mask_resident_id``, ``mask_phone``, ``mask_name``); masking never raises.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Annotated

from pydantic import AfterValidator

RESIDENT_ID = "resident identity number"
CREDIT_CODE = "unified social credit code"
DIVISION_CODE = "administrative division code"

DIGITS = "0123456789"

# Provincial-level prefixes of GB/T 2260 (11 Beijing … 65 Xinjiang, 71 Taiwan, 81 Hong Kong, 82 Macao).
_PREFIX_BLOCKS = (range(11, 16), range(21, 24), range(31, 38), range(41, 47), range(50, 55), range(61, 66))
PROVINCE_PREFIXES = frozenset(str(n) for block in (*_PREFIX_BLOCKS, (71, 81, 82)) for n in block)
_PREFIX_RANGES = "11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71, 81 or 82"

_RESIDENT_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RESIDENT_CHECK = "10X98765432"
_EARLIEST_BIRTH_YEAR = 1900

CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_VALUES = {char: value for value, char in enumerate(CREDIT_ALPHABET)}
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_CREDIT_EXCLUDED_LETTERS = "IOSVZ"

_MAX_SHOWN = 40


class InvalidIdentifier(ValueError):
    """An identifier that fails validation; ``str(exc)`` is a message a person can act on."""

    def __init__(self, kind: str, value: str, problem: str) -> None:
        shown = value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "…"
        super().__init__(f"{kind} {shown or '(empty)'}: {problem}")
        self.kind = kind
        self.value = value
        self.problem = problem


def _normalise(value: str) -> str:
    """Fold full-width characters (typed with Chinese input methods) to ASCII and remove all whitespace."""
    return "".join(unicodedata.normalize("NFKC", value).split())


def _check_province_prefix(kind: str, value: str, code: str, what: str) -> None:
    prefix = code[:2]
    if prefix not in PROVINCE_PREFIXES:
        problem = f"{what} {code} should start with a province prefix ({_PREFIX_RANGES}), got {prefix}"
        raise InvalidIdentifier(kind, value, problem)


# --- resident identity number -------------------------------------------------------------------------------


def _resident_check_char(body: str) -> str:
    return _RESIDENT_CHECK[sum(int(d) * w for d, w in zip(body, _RESIDENT_WEIGHTS, strict=True)) % 11]


def validate_resident_id(value: str) -> str:
    """Validate an 18-character resident identity number; return it normalised (final ``x`` upper-cased)."""
    rid = _normalise(value)
    if rid.endswith("x"):
        rid = rid[:-1] + "X"
    if len(rid) != 18:
        raise InvalidIdentifier(RESIDENT_ID, rid, f"expected 18 characters, got {len(rid)}")
    for position, char in enumerate(rid[:17], start=1):
        if char not in DIGITS:
            raise InvalidIdentifier(RESIDENT_ID, rid, f"character {position} should be a digit, got {char!r}")
    if rid[17] not in DIGITS + "X":
        raise InvalidIdentifier(RESIDENT_ID, rid, f"check character should be a digit or X, got {rid[17]!r}")
    _check_province_prefix(RESIDENT_ID, rid, rid[:6], "address code")
    born = rid[6:14]
    try:
        birth = date(int(born[:4]), int(born[4:6]), int(born[6:]))
    except ValueError:
        raise InvalidIdentifier(RESIDENT_ID, rid, f"birth date {born} is not a real date") from None
    if birth.year < _EARLIEST_BIRTH_YEAR:
        raise InvalidIdentifier(RESIDENT_ID, rid, f"birth date {born} is before {_EARLIEST_BIRTH_YEAR}")
    if birth > date.today():
        raise InvalidIdentifier(RESIDENT_ID, rid, f"birth date {born} is in the future")
    expected = _resident_check_char(rid[:17])
    if rid[17] != expected:
        raise InvalidIdentifier(RESIDENT_ID, rid, f"check character should be {expected}, got {rid[17]}")
    return rid


def birth_date(resident_id: str) -> date:
    """The birth date encoded in characters 7-14 of a resident identity number."""
    rid = validate_resident_id(resident_id)
    return date(int(rid[6:10]), int(rid[10:12]), int(rid[12:14]))


def is_male(resident_id: str) -> bool:
    """True when the sequence (character 17) is odd, as GB 11643 assigns odd sequences to men."""
    return int(validate_resident_id(resident_id)[16]) % 2 == 1


def division_code(resident_id: str) -> str:
    """The 6-digit address code (division of first registration) of a resident identity number."""
    return validate_resident_id(resident_id)[:6]


# --- unified social credit code -----------------------------------------------------------------------------


def _check_credit_characters(code: str) -> None:
    for position, char in enumerate(code, start=1):
        if char in _CREDIT_VALUES:
            continue
        if char in _CREDIT_EXCLUDED_LETTERS:
            problem = f"character {position} is {char!r}, but the letters I, O, S, V and Z are not allowed"
        else:
            problem = (
                f"character {position} is {char!r}; "
                "expected a digit or a capital letter A-Y other than I, O, S, V and Z"
            )
        raise InvalidIdentifier(CREDIT_CODE, code, problem)


def _credit_check_char(body: str) -> str:
    remainder = sum(_CREDIT_VALUES[c] * w for c, w in zip(body, _CREDIT_WEIGHTS, strict=True)) % 31
    return CREDIT_ALPHABET[(31 - remainder) % 31]


def validate_credit_code(value: str) -> str:
    """Validate an 18-character unified social credit code and return it normalised (upper case)."""
    code = _normalise(value).upper()
    if len(code) != 18:
        raise InvalidIdentifier(CREDIT_CODE, code, f"expected 18 characters, got {len(code)}")
    _check_credit_characters(code)
    division = code[2:8]
    if not all(c in DIGITS for c in division):
        problem = f"characters 3-8 should be the 6-digit administrative division code, got {division}"
        raise InvalidIdentifier(CREDIT_CODE, code, problem)
    expected = _credit_check_char(code[:17])
    if code[17] != expected:
        raise InvalidIdentifier(CREDIT_CODE, code, f"check character should be {expected}")
    return code


# --- administrative division code ---------------------------------------------------------------------------


def validate_division_code(value: str) -> str:
    """Validate a 6-digit GB/T 2260 administrative division code with a real province prefix."""
    code = _normalise(value)
    if len(code) != 6 or not all(c in DIGITS for c in code):
        raise InvalidIdentifier(DIVISION_CODE, code, "expected 6 digits, e.g. 510100")
    _check_province_prefix(DIVISION_CODE, code, code, "code")
    return code


def province_of_division(code: str) -> str:
    """The province-level code a division belongs to: ``510104`` → ``510000``."""
    return validate_division_code(code)[:2] + "0000"


def validate_province_code(value: str) -> str:
    """Validate a province-level GB/T 2260 code: six digits with a real province prefix, ending in 0000."""
    code = validate_division_code(value)
    if not code.endswith("0000"):
        raise ValueError(f"province {code}: expected a province-level code ending in 0000, e.g. {code[:2]}0000")
    return code


# --- phone number ---------------------------------------------------------------------------------------------

_PHONE = re.compile(r"^(?:1[3-9]\d{9}|0\d{2,3}-?\d{7,8})$")


def validate_phone(value: str) -> str:
    """A mainland mobile number or a landline with its area code, without spaces or the +86 prefix."""
    number = "".join(unicodedata.normalize("NFKC", value).split()).removeprefix("+86")
    if not _PHONE.match(number):
        raise ValueError(
            f"phone number {value!r}: expected a mainland mobile number (11 digits starting with 13-19, "
            "e.g. 13812345678) or a landline with its area code (e.g. 028-86000000)"
        )
    return number


# --- masking ------------------------------------------------------------------------------------------------


def _mask(text: str, head: int, tail: int, hidden_at_least: int) -> str:
    """Show at most ``head`` leading and ``tail`` trailing characters, always hiding ``hidden_at_least``."""
    visible = max(0, len(text) - hidden_at_least)
    head = min(head, visible // 2)
    tail = min(tail, visible - head)
    return text[:head] + "*" * (len(text) - head - tail) + text[len(text) - tail :]


def mask_resident_id(value: str) -> str:
    """``51010519900307123X`` → ``5101**********123X``; malformed input reveals less, never more."""
    return _mask(_normalise(value), head=4, tail=4, hidden_at_least=10)


def mask_phone(value: str) -> str:
    """``13812345678`` → ``138****5678``; malformed input reveals less, never more."""
    return _mask(_normalise(value), head=3, tail=4, hidden_at_least=4)


def mask_name(value: str) -> str:
    """``张三丰`` → ``张**``: only the first character (the surname) stays; a one-character name is hidden."""
    name = value.strip()
    if len(name) <= 1:
        return "*" * len(name)
    return name[0] + "*" * (len(name) - 1)


# --- request-model types ------------------------------------------------------------------------------------

ResidentIdStr = Annotated[str, AfterValidator(validate_resident_id)]
CreditCodeStr = Annotated[str, AfterValidator(validate_credit_code)]
DivisionCodeStr = Annotated[str, AfterValidator(validate_division_code)]
ProvinceCodeStr = Annotated[str, AfterValidator(validate_province_code)]
PhoneStr = Annotated[str, AfterValidator(validate_phone)]


# --- generators for tests and demo data ---------------------------------------------------------------------


def make_resident_id(division: str, birth: date, sequence: int) -> str:
    """A valid resident identity number for ``division``, ``birth`` and ``sequence`` (0-999; odd = male)."""
    if not 0 <= sequence <= 999:
        raise ValueError(f"sequence must be between 0 and 999, got {sequence}")
    body = f"{validate_division_code(division)}{birth.year:04d}{birth.month:02d}{birth.day:02d}{sequence:03d}"
    return validate_resident_id(body + _resident_check_char(body))


def make_credit_code(prefix17: str) -> str:
    """Complete the first 17 characters of a unified social credit code with its check character."""
    body = _normalise(prefix17).upper()
    if len(body) != 17:
        problem = f"expected 17 characters before the check character, got {len(body)}"
        raise InvalidIdentifier(CREDIT_CODE, body, problem)
    _check_credit_characters(body)
    return validate_credit_code(body + _credit_check_char(body))
