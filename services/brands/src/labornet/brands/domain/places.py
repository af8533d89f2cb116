"""Places in requests: member provinces of the federation and division codes inside a province.

Which provinces are members and which prefectures a province has is configuration (the province registry and the
division registry), which a request body parser cannot know. These validators therefore check the shape of a code
always, and membership only when the caller validates with a context::

    BrandDraft.model_validate(data, context=place_context(registry, divisions, "510000"))

``province`` in the context is the province the divisions must lie in (the node's own province: a brand's origin,
a demand's work place).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo

from labornet.shared.divisions import DivisionRegistry, InvalidDivision
from labornet.shared.identifiers import validate_division_code
from labornet.shared.provinces import ProvinceRegistry, UnknownProvince


def place_context(registry: ProvinceRegistry, divisions: DivisionRegistry, province: str) -> dict[str, Any]:
    return {"registry": registry, "divisions": divisions, "province": province}


def _member_province(value: str, info: ValidationInfo) -> str:
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


def _division_in_province(value: str, info: ValidationInfo) -> str:
    code = validate_division_code(value)
    context = info.context or {}
    divisions, province = context.get("divisions"), context.get("province")
    if isinstance(divisions, DivisionRegistry) and isinstance(province, str):
        try:
            divisions.resolve(province, code)
        except InvalidDivision as exc:
            raise ValueError(str(exc)) from None
    return code


MemberProvince = Annotated[str, AfterValidator(_member_province)]
DivisionInProvince = Annotated[str, AfterValidator(_division_in_province)]
