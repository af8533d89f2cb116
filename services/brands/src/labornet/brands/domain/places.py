"""Places in requests: member provinces of the federation and divisions inside a province.

Which provinces are members and which prefectures a province has is configuration (the province registry and the
division registry), which a request model cannot know: the models check the shape of a code, and the use cases
check membership with these functions. Each failure names the request field, so it becomes a 422 naming it.
"""

from __future__ import annotations

from collections.abc import Iterable

from labornet.shared.divisions import Division, DivisionRegistry, InvalidDivision
from labornet.shared.provinces import ProvinceRegistry


class InvalidPlace(ValueError):
    """A code that is well formed but not a place this request may name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def division_in(divisions: DivisionRegistry, province: str, code: str, field: str = "division_code") -> Division:
    """The division ``code`` of ``province`` (a prefecture, or a county under one)."""
    try:
        return divisions.resolve(province, code)
    except InvalidDivision as exc:
        raise InvalidPlace(field, str(exc)) from None


def members(registry: ProvinceRegistry, codes: Iterable[str], field: str) -> list[str]:
    """``codes`` if every one is a member of the federation."""
    result = list(codes)
    for index, code in enumerate(result):
        if code not in registry:
            known = ", ".join(registry.codes())
            raise InvalidPlace(f"{field}.{index}", f"province {code} is not a member of the federation ({known})")
    return result
