"""Administrative divisions of the member provinces (prefecture level, GB/T 2260), loaded from a data file.

A work place is a prefecture code (``510100`` 成都市) or a county code under it (``510104``); it must lie in the
province that owns the record. A region joining the federation adds its prefectures to a copy of the file
(``LABORNET_DIVISIONS_PATH``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path


class InvalidDivision(ValueError):
    """A division code that is not a place in the given province."""


@dataclass(frozen=True)
class Division:
    code: str
    prefecture: str
    name: str


class DivisionRegistry:
    def __init__(self, divisions: dict[str, dict[str, str]]) -> None:
        self._by_province = divisions

    @classmethod
    def from_file(cls, path: Path | None = None) -> DivisionRegistry:
        text = (
            path.read_text("utf-8")
            if path
            else files("labornet.shared").joinpath("data/divisions.json").read_text("utf-8")
        )
        document = json.loads(text)
        return cls({str(p): {str(c): str(n) for c, n in d.items()} for p, d in document["divisions"].items()})

    def resolve(self, province: str, code: str) -> Division:
        """The division ``code`` in ``province``, or :class:`InvalidDivision` saying what is wrong."""
        if len(code) != 6 or not code.isdigit():
            raise InvalidDivision(f"division code {code!r}: expected 6 digits such as 510100")
        if code[:2] != province[:2]:
            raise InvalidDivision(f"division code {code} is not in province {province}")
        prefectures = self._by_province.get(province, {})
        prefecture = code[:4] + "00"
        if prefecture not in prefectures:
            known = ", ".join(sorted(prefectures)[:6])
            raise InvalidDivision(
                f"division code {code}: no prefecture {prefecture} in province {province} (e.g. {known})"
            )
        return Division(code=code, prefecture=prefecture, name=prefectures[prefecture])


@functools.cache
def load_divisions(path: Path | None = None) -> DivisionRegistry:
    return DivisionRegistry.from_file(path)
