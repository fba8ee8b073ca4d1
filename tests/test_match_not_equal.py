"""`field != value` in a SearchMedia Match, as vod-api.md lists it: accepted offline wherever `field = value` is,
with the same value rules, and matched by the emulator as "not what = selects" (results computed from the
generated rows alone)."""

from __future__ import annotations

from typing import Any

import pytest

from snapbatch.emulator.catalogue import Catalogue, CatalogueError
from snapbatch.manifest.match import Condition, MatchError, parse
from tests.test_search import _expected, _rows, _scroll


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return _rows(20_000, seed=31)


@pytest.fixture(scope="module")
def catalogue(rows: list[dict[str, Any]]) -> Catalogue:
    catalogue = Catalogue()
    for row in rows:
        catalogue.add(row)
    return catalogue


QUERIES = [
    ("Status != 'Normal'", lambda r: r["Status"] != "Normal"),
    ("CateId != 1234 and Tags != 'hd'", lambda r: r["CateId"] != 1234 and "hd" not in r["Tags"]),
    ("CateId != '3000'", lambda r: r["CateId"] != 3000),
    (
        "(Title != 'series-x' or CateId != 2000) and Status in ('Normal','Checking')",
        lambda r: ("series-x" not in r["Title"] or r["CateId"] != 2000) and r["Status"] in ("Normal", "Checking"),
    ),
    (
        "Tags != 'kids' and CreationTime = ['2026-03-01T00:00:00Z','2026-04-01T00:00:00Z')",
        lambda r: "kids" not in r["Tags"] and "2026-03-01T00:00:00Z" <= r["CreationTime"] < "2026-04-01",
    ),
]


@pytest.mark.parametrize(("match", "keep"), QUERIES, ids=[q[0][:30] for q in QUERIES])
def test_not_equal_selects_what_equal_does_not(
    catalogue: Catalogue, rows: list[dict[str, Any]], match: str, keep: Any
) -> None:
    """The offline parser accepts the expression, and the emulator's traversal returns exactly the videos the
    independently written filter keeps, in CreationTime order."""
    parse(match)
    expected = _expected(rows, keep)
    assert 0 < len(expected) < len(rows)
    assert _scroll(catalogue, match) == expected


def test_a_video_id_not_equal_leaves_out_that_one_video(catalogue: Catalogue, rows: list[dict[str, Any]]) -> None:
    """VideoId != 'x' is every video but x."""
    gone = rows[123]["VideoId"]
    got = _scroll(catalogue, f"VideoId != '{gone}'")
    assert len(got) == len(rows) - 1 and gone not in got


def test_not_equal_parses_to_a_condition_typed_as_equal() -> None:
    """`!=` keeps the value rules of `=`: CateId quoted or not, a status from the list."""
    assert parse("CateId != 12") == Condition("CateId", "!=", ("12",))
    assert parse("CateId != '12'") == Condition("CateId", "!=", ("12",))
    assert parse("Status != 'Checking'") == Condition("Status", "!=", ("Checking",))


@pytest.mark.parametrize(
    ("text", "offset", "words"),
    [
        ("Status != 'Normall'", 11, "not a video status"),
        ("CateId != 'abc'", 11, "whole number"),
        ("Title != abc", 9, "text in single quotes"),
        ("CreationTime != ('2026-01-01T00:00:00Z','2026-02-01T00:00:00Z')", 13, "does not take !="),
        ("Status != ('Normal','Checking')", 10, "takes one value"),
        ("Status ! = 'Normal'", 7, "not an operator"),
        ("Status !=", 9, "expected a value"),
    ],
)
def test_not_equal_errors_point_at_the_offending_character(text: str, offset: int, words: str) -> None:
    """The same checks as for `=`, located: a bad value, a field that only takes a range, a list after !=."""
    with pytest.raises(MatchError) as caught:
        parse(text)
    assert caught.value.offset == offset and words in caught.value.message


@pytest.mark.parametrize(
    "match", ["CreationTime != '2026-01-01T00:00:00Z'", "Status != ('Normal','Checking')", "Status != 'Bogus'"]
)
def test_the_emulator_refuses_what_the_parser_refuses(catalogue: Catalogue, match: str) -> None:
    """The emulator answers InvalidParameter for a `!=` the protocol cannot mean."""
    with pytest.raises(CatalogueError) as caught:
        catalogue.search({"Match": match, "PageNo": "1", "PageSize": "10"}, "r")
    assert caught.value.code == "InvalidParameter"
