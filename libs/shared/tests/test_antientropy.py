"""Digests and range comparison of anti-entropy (ADR 0008), without a database or a network."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from labornet.shared.antientropy import (
    EMPTY_DIGEST,
    Digest,
    Range,
    covers_all_ids,
    cut,
    differing,
    fold,
    record_hash,
)


def record(n: int, **changes: object) -> dict[str, object]:
    return {"id": f"330000-V-{n:06d}", "title": f"焊工 {n}", "version": 1, "status": "open", **changes}


def hashes(records: list[dict[str, object]]) -> list[tuple[str, bytes]]:
    return [(str(r["id"]), record_hash(r)) for r in sorted(records, key=lambda r: str(r["id"]))]


ORIGIN = [record(n) for n in range(1, 26)]


def test_a_record_hash_sees_every_field_and_ignores_key_order() -> None:
    assert record_hash({"a": 1, "b": "x"}) == record_hash({"b": "x", "a": 1})
    assert record_hash(record(1)) != record_hash(record(1, title="焊工 1 "))
    assert record_hash(record(1)) != record_hash(record(1, version=2))


def test_the_origin_cuts_its_rows_into_ranges_that_cover_every_id() -> None:
    ranges = cut(hashes(ORIGIN), 10)
    assert [(r.after, r.until, r.rows) for r in ranges] == [
        ("", "330000-V-000010", 10),
        ("330000-V-000010", "330000-V-000020", 10),
        ("330000-V-000020", None, 5),
    ]
    assert covers_all_ids(ranges)
    assert cut([], 10) == [Range("", None, 0, EMPTY_DIGEST)]
    exact = cut(hashes(ORIGIN[:20]), 10)
    assert [(r.until, r.rows) for r in exact] == [("330000-V-000010", 10), (None, 10)]


def test_an_equal_replica_folds_into_the_same_ranges() -> None:
    ranges = cut(hashes(ORIGIN), 10)
    assert fold(hashes(list(reversed(ORIGIN))), ranges) == ranges
    assert differing(ranges, fold(hashes(ORIGIN), ranges)) == []


@pytest.mark.parametrize(
    ("replica", "expected"),
    [
        ([*ORIGIN[:11], record(12, title="改过的标题"), *ORIGIN[12:]], [1]),  # same version, other title
        ([*ORIGIN[:11], record(12, version=98), *ORIGIN[12:]], [1]),  # a version far ahead
        ([r for r in ORIGIN if r["id"] != "330000-V-000003"], [0]),  # a row the replica lost
        ([*ORIGIN, record(0)], [0]),  # below the origin's first id: the first range is open below
        ([*ORIGIN, record(15, id="330000-V-000015A")], [1]),  # between two ids of a middle range
        ([*ORIGIN, record(99)], [2]),  # above the last id: the last range is open above
        ([], [0, 1, 2]),
    ],
)
def test_each_kind_of_difference_lands_in_its_range(replica: list[dict[str, object]], expected: list[int]) -> None:
    ranges = cut(hashes(ORIGIN), 10)
    assert differing(ranges, fold(hashes(replica), ranges)) == [ranges[i] for i in expected]


def test_an_origin_without_rows_makes_every_held_row_differ() -> None:
    ranges = cut([], 10)
    assert differing(ranges, fold(hashes(ORIGIN), ranges)) == ranges
    assert fold(hashes(ORIGIN), ranges)[0].rows == 25


def test_a_digest_document_round_trips_and_must_cover_the_id_space() -> None:
    digest = Digest("330000", "vacancies", datetime(2026, 11, 24, 8, 0, tzinfo=UTC), 25, tuple(cut(hashes(ORIGIN), 10)))
    assert Digest.from_json(digest.to_json()) == digest
    document = digest.to_json()
    with pytest.raises(ValueError, match="cover"):
        Digest.from_json(document | {"ranges": document["ranges"][1:]})
    with pytest.raises(ValueError, match="cover"):
        Digest.from_json(document | {"rows": 24})
    gap = [dict(document["ranges"][0]), *document["ranges"][1:]]
    gap[0]["until"] = "330000-V-000009"
    with pytest.raises(ValueError, match="cover"):
        Digest.from_json(document | {"ranges": gap})
