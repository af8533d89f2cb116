"""Search tokens for Chinese and English text.

Chinese job words are mostly two characters (厨师, 司机, 保安), which trigram indexes cannot find. Like Lucene's
CJKAnalyzer, CJK runs are indexed as overlapping character pairs (``川菜厨师`` → ``川菜 菜厨 厨师``); Latin and digit
runs become lower-cased words. A query goes through the same function, so ``厨师`` matches ``川菜厨师`` and ``chef``
matches ``Sichuan chef``. A run of a single CJK character yields that character alone.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"[{_CJK}]+|[0-9a-z]+")
_IS_CJK = re.compile(rf"[{_CJK}]")


def tokens(text: str) -> list[str]:
    """Search tokens of ``text`` in order (duplicates kept)."""
    normalised = unicodedata.normalize("NFKC", text).lower()
    result: list[str] = []
    for run in _RUNS.findall(normalised):
        if _IS_CJK.match(run):
            result.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
        else:
            result.append(run)
    return result


def document(parts: Iterable[str]) -> str:
    """The ``search_tokens`` column: distinct tokens of every part, space separated."""
    seen: dict[str, None] = {}
    for part in parts:
        for token in tokens(part):
            seen.setdefault(token, None)
    return " ".join(seen)


def is_cjk(token: str) -> bool:
    return bool(_IS_CJK.match(token))
