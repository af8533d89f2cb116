"""The province registry: the bundled nine regions, a tenth joining by configuration, malformed files."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from labornet.shared.provinces import (
    Province,
    ProvinceRegistry,
    ProvinceRegistryError,
    UnknownProvince,
    load_registry,
)
from labornet.shared.settings import Settings

NINE = [
    ("510000", "四川省", "四川", "Sichuan"),
    ("500000", "重庆市", "重庆", "Chongqing"),
    ("520000", "贵州省", "贵州", "Guizhou"),
    ("530000", "云南省", "云南", "Yunnan"),
    ("540000", "西藏自治区", "西藏", "Tibet"),
    ("640000", "宁夏回族自治区", "宁夏", "Ningxia"),
    ("350000", "福建省", "福建", "Fujian"),
    ("330000", "浙江省", "浙江", "Zhejiang"),
    ("320000", "江苏省", "江苏", "Jiangsu"),
]
NINE_CODES = [code for code, *_ in NINE]
SHAANXI = {"code": "610000", "zh": "陕西省", "short_zh": "陕西", "en": "Shaanxi"}


def bundled_document() -> dict[str, Any]:
    text = resources.files("labornet.shared").joinpath("data", "provinces.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def write(tmp_path: Path, document: object, name: str = "provinces.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


# --- the bundled registry -----------------------------------------------------------------------------------


def test_bundled_registry_lists_the_nine_regions_in_file_order() -> None:
    registry = ProvinceRegistry.from_file()
    assert registry.codes() == NINE_CODES
    assert [province.code for province in registry] == NINE_CODES
    assert len(registry) == 9


@pytest.mark.parametrize(("code", "zh", "short_zh", "en"), NINE)
def test_bundled_names(code: str, zh: str, short_zh: str, en: str) -> None:
    province = ProvinceRegistry.from_file().get(code)
    assert province == Province(code=code, zh=zh, short_zh=short_zh, en=en)
    assert code in ProvinceRegistry.from_file()


@pytest.mark.parametrize("code", ["110000", "510100", "", "51000", "sichuan"])
def test_unknown_code_names_the_members(code: str) -> None:
    registry = ProvinceRegistry.from_file()
    assert code not in registry
    with pytest.raises(UnknownProvince) as info:
        registry.get(code)
    assert str(info.value) == (
        f"unknown province {code!r}; the federation's members are "
        "510000, 500000, 520000, 530000, 540000, 640000, 350000, 330000, 320000"
    )
    assert info.value.code == code
    assert isinstance(info.value, LookupError)


def test_membership_is_by_code_string_only() -> None:
    registry = ProvinceRegistry.from_file()
    assert "510000" in registry
    assert 510000 not in registry
    assert Province("510000", "四川省", "四川", "Sichuan") not in registry


def test_codes_returns_a_copy() -> None:
    registry = ProvinceRegistry.from_file()
    registry.codes().append("610000")
    assert registry.codes() == NINE_CODES


@pytest.mark.parametrize("code", NINE_CODES)
def test_partners_are_the_other_eight_in_file_order(code: str) -> None:
    partners = ProvinceRegistry.from_file().partners_of(code)
    assert [p.code for p in partners] == [c for c in NINE_CODES if c != code]


def test_partners_of_an_unknown_code() -> None:
    with pytest.raises(UnknownProvince, match="unknown province '610000'"):
        ProvinceRegistry.from_file().partners_of("610000")


def test_province_is_immutable() -> None:
    province = ProvinceRegistry.from_file().get("510000")
    with pytest.raises(dataclasses.FrozenInstanceError):
        province.code = "610000"  # type: ignore[misc]


def test_load_registry_loads_each_path_once(tmp_path: Path) -> None:
    assert load_registry(None) is load_registry(None)
    assert load_registry(None).codes() == NINE_CODES
    path = write(tmp_path, bundled_document())
    assert load_registry(path) is load_registry(path)
    assert load_registry(path) is not load_registry(None)


# --- a tenth region -----------------------------------------------------------------------------------------


def test_a_tenth_region_joins_through_a_copy_of_the_file(tmp_path: Path) -> None:
    document = bundled_document()
    document["provinces"].append(SHAANXI)
    registry = ProvinceRegistry.from_file(write(tmp_path, document))
    assert registry.codes() == [*NINE_CODES, "610000"]
    assert registry.get("610000") == Province(**SHAANXI)
    assert "610000" in registry
    assert len(registry.partners_of("610000")) == 9
    assert registry.get("610000") in registry.partners_of("510000")
    assert "610000" not in ProvinceRegistry.from_file()


def test_a_tenth_region_through_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = bundled_document()
    document["provinces"].append(SHAANXI)
    path = write(tmp_path, document)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    monkeypatch.setenv("LABORNET_PROVINCES_PATH", str(path))
    registry = load_registry(Settings().provinces_path)
    assert registry.get("610000").en == "Shaanxi"
    assert registry.codes()[-1] == "610000"


def test_a_smaller_federation(tmp_path: Path) -> None:
    document = {
        "version": 1,
        "provinces": [e for e in bundled_document()["provinces"] if e["code"] != "540000"],
    }
    registry = ProvinceRegistry.from_file(write(tmp_path, document))
    assert "540000" not in registry
    assert registry.codes() == [c for c in NINE_CODES if c != "540000"]


# --- malformed files ----------------------------------------------------------------------------------------


# Full-width digits count as digits for str.isdigit, but a registry code must be plain ASCII.
FULL_WIDTH_CODE = "".join(chr(ord(c) + 0xFEE0) for c in "610000")


def entry(**overrides: Any) -> dict[str, Any]:
    return {**SHAANXI, **overrides}


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "expected a JSON object with 'version' and 'provinces'"),
        ({"provinces": [SHAANXI]}, "unsupported version None; expected 1"),
        ({"version": 2, "provinces": [SHAANXI]}, "unsupported version 2; expected 1"),
        ({"version": "1", "provinces": [SHAANXI]}, "unsupported version '1'; expected 1"),
        ({"version": 1, "provinces": [SHAANXI], "members": []}, "unknown field(s) members"),
        ({"version": 1}, "'provinces' should be a list of objects"),
        ({"version": 1, "provinces": {"610000": SHAANXI}}, "'provinces' should be a list of objects"),
        ({"version": 1, "provinces": []}, "lists no province"),
        (
            {"version": 1, "provinces": ["610000"]},
            "provinces[0] should be an object with code, zh, short_zh, en",
        ),
        ({"version": 1, "provinces": [SHAANXI, {"code": "620000"}]}, "provinces[1] lacks zh, short_zh, en"),
        ({"version": 1, "provinces": [entry(capital="西安")]}, "provinces[0] has unknown field(s) capital"),
        (
            {"version": 1, "provinces": [entry(zh="")]},
            "provinces[0]: zh should be a non-empty string, got ''",
        ),
        (
            {"version": 1, "provinces": [entry(en=" ")]},
            "provinces[0]: en should be a non-empty string, got ' '",
        ),
        (
            {"version": 1, "provinces": [entry(code=610000)]},
            "provinces[0]: code should be a non-empty string, got 610000",
        ),
        (
            {"version": 1, "provinces": [entry(code="61000")]},
            "code '61000' (Shaanxi) should be 6 digits ending in 0000, e.g. 510000",
        ),
        (
            {"version": 1, "provinces": [entry(code="610100")]},
            "code '610100' (Shaanxi) should be 6 digits ending in 0000, e.g. 510000",
        ),
        (
            {"version": 1, "provinces": [entry(code=FULL_WIDTH_CODE)]},
            f"code {FULL_WIDTH_CODE!r} (Shaanxi) should be 6 digits ending in 0000, e.g. 510000",
        ),
        ({"version": 1, "provinces": [SHAANXI, entry(en="Shaanxi again")]}, "code 610000 is listed twice"),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, document: object, problem: str) -> None:
    path = write(tmp_path, document)
    with pytest.raises(ProvinceRegistryError) as info:
        ProvinceRegistry.from_file(path)
    message = str(info.value)
    assert message.startswith(f"province registry {path}")
    assert message.endswith(problem)


def test_invalid_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "provinces.json"
    path.write_text('{"version": 1, "provinces": [', encoding="utf-8")
    pattern = r"^province registry .*provinces\.json: not valid JSON \("
    with pytest.raises(ProvinceRegistryError, match=pattern):
        ProvinceRegistry.from_file(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ProvinceRegistryError) as info:
        ProvinceRegistry.from_file(path)
    assert str(info.value).startswith(f"province registry {path}: cannot be read (")
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "provinces.json"
    path.write_bytes('{"version": 1, "provinces": [{"code": "610000", "zh": "陕西省"}]}'.encode("gb18030"))
    with pytest.raises(ProvinceRegistryError, match="cannot be read"):
        ProvinceRegistry.from_file(path)


def test_the_constructor_checks_codes_too() -> None:
    pattern = r"^province registry: code '5100' \(Sichuan\) should be 6 digits"
    with pytest.raises(ProvinceRegistryError, match=pattern):
        ProvinceRegistry([Province("5100", "四川省", "四川", "Sichuan")])
    with pytest.raises(ProvinceRegistryError, match=r"^province registry: lists no province$"):
        ProvinceRegistry([])
