"""The registry of the federation's member regions.

Membership is data, not code. The bundled ``data/provinces.json`` lists the nine founding regions; a tenth
region joins by adding an entry to a copy of that file and pointing ``LABORNET_PROVINCES_PATH`` (the
``provinces_path`` setting) at it. File format::

    {"version": 1,
     "provinces": [{"code": "510000", "zh": "四川省", "short_zh": "四川", "en": "Sichuan"}, ...]}

The order of the file is the federation's order (it fixes, for example, the ports of a local federation).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
_FIELDS = ("code", "zh", "short_zh", "en")


class ProvinceRegistryError(ValueError):
    """The registry file cannot be read or does not follow the format."""


class UnknownProvince(LookupError):
    """A code that is not a member of the federation."""

    def __init__(self, code: str, members: Iterable[str]) -> None:
        super().__init__(f"unknown province {code!r}; the federation's members are {', '.join(members)}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Province:
    """A member region: its GB/T 2260 code and its names."""

    code: str
    zh: str
    short_zh: str
    en: str


class ProvinceRegistry:
    """The member regions in registry-file order."""

    def __init__(self, provinces: Iterable[Province], *, source: str = "province registry") -> None:
        self._provinces: dict[str, Province] = {}
        for province in provinces:
            code = province.code
            if len(code) != 6 or not code.isascii() or not code.isdigit() or not code.endswith("0000"):
                raise ProvinceRegistryError(
                    f"{source}: code {code!r} ({province.en}) should be 6 digits ending in 0000, e.g. 510000"
                )
            if code in self._provinces:
                raise ProvinceRegistryError(f"{source}: code {code} is listed twice")
            self._provinces[code] = province
        if not self._provinces:
            raise ProvinceRegistryError(f"{source}: lists no province")

    @classmethod
    def from_file(cls, path: Path | None = None) -> ProvinceRegistry:
        """Load a registry file; ``None`` loads the bundled nine regions."""
        if path is None:
            source = "bundled province registry"
            bundled = resources.files("labornet.shared").joinpath("data", "provinces.json")
            text = bundled.read_text(encoding="utf-8")
        else:
            source = f"province registry {path}"
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ProvinceRegistryError(f"{source}: cannot be read ({exc})") from exc
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProvinceRegistryError(f"{source}: not valid JSON ({exc})") from exc
        return cls(_parse(document, source), source=source)

    def get(self, code: str) -> Province:
        try:
            return self._provinces[code]
        except KeyError:
            raise UnknownProvince(code, self._provinces) from None

    def __contains__(self, code: object) -> bool:
        return code in self._provinces

    def __iter__(self) -> Iterator[Province]:
        return iter(self._provinces.values())

    def __len__(self) -> int:
        return len(self._provinces)

    def codes(self) -> list[str]:
        return list(self._provinces)

    def partners_of(self, code: str) -> list[Province]:
        """Every other member, in registry order."""
        self.get(code)
        return [province for province in self if province.code != code]


def _parse(document: Any, source: str) -> list[Province]:
    if not isinstance(document, dict):
        raise ProvinceRegistryError(f"{source}: expected a JSON object with 'version' and 'provinces'")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise ProvinceRegistryError(f"{source}: unsupported version {version!r}; expected {FORMAT_VERSION}")
    unknown = sorted(set(document) - {"version", "provinces"})
    if unknown:
        raise ProvinceRegistryError(f"{source}: unknown field(s) {', '.join(unknown)}")
    entries = document.get("provinces")
    if not isinstance(entries, list):
        raise ProvinceRegistryError(f"{source}: 'provinces' should be a list of objects")
    return [_parse_entry(entry, f"{source}: provinces[{index}]") for index, entry in enumerate(entries)]


def _parse_entry(entry: Any, where: str) -> Province:
    if not isinstance(entry, dict):
        raise ProvinceRegistryError(f"{where} should be an object with {', '.join(_FIELDS)}")
    missing = [field for field in _FIELDS if field not in entry]
    if missing:
        raise ProvinceRegistryError(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise ProvinceRegistryError(f"{where} has unknown field(s) {', '.join(unknown)}")
    for field in _FIELDS:
        value = entry[field]
        if not isinstance(value, str) or not value.strip():
            raise ProvinceRegistryError(f"{where}: {field} should be a non-empty string, got {value!r}")
    return Province(code=entry["code"], zh=entry["zh"], short_zh=entry["short_zh"], en=entry["en"])


@functools.cache
def load_registry(path: Path | None = None) -> ProvinceRegistry:
    """The registry at ``path`` (the ``provinces_path`` setting), or the bundled one; loaded once per path."""
    return ProvinceRegistry.from_file(path)
