"""Search tokens for Chinese and English brand text.

Brand names are short Chinese words (川妹子, 蜀绣, 中江表嫂), so CJK runs become overlapping character pairs
(``川菜厨师`` → ``川菜 菜厨 厨师``), as in Lucene's CJKAnalyzer; Latin and digit runs become lower-cased words. A
query goes through the same function, so ``厨师`` finds ``川菜厨师`` and ``chef`` finds ``Sichuan Chefs``. A run of
one CJK character yields that character alone.

The rule is the one of ``labornet.jobs.domain.text``; services share no code but ``labornet.shared``, so this is
a deliberate copy (see the service README).
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
    """The ``search_tokens`` column: distinct tokens of every part, each with a space on either side.

    The padding lets a query find a whole token with ``LIKE '% token %'`` and a word prefix with ``'% word%'``.
    """
    seen: dict[str, None] = {}
    for part in parts:
        for token in tokens(part):
            seen.setdefault(token, None)
    return f" {' '.join(seen)} "


def is_cjk(token: str) -> bool:
    return bool(_IS_CJK.match(token))


def has_cjk(text: str) -> bool:
    return bool(_IS_CJK.search(unicodedata.normalize("NFKC", text)))
