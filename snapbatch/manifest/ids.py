"""Reading a job's IDs: inline values, a text file (one ID a line) or a CSV column; checking each ID."""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Iterator
from typing import NamedTuple, TextIO

from snapbatch.errors import ManifestError
from snapbatch.models import IdSource
from snapbatch.vod.api import REFERENCE_ID

__all__ = ["IdEntry", "check_id", "read_ids"]

_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_TRAILING_COMMENT = re.compile(r"\s+#.*$")
MAX_ID_CHARS = 256


class IdEntry(NamedTuple):  # a tuple: a million of these are made per pass over an ID file
    """One ID as read, with where it stands; ``error`` set when the line itself is unusable."""

    value: str
    file: str
    line: int | None
    col: int | None
    error: str | None = None


def check_id(kind: str, value: str) -> str | None:
    """What is wrong with this ID, or None."""
    if not value:
        return "empty ID"
    if kind == "ReferenceId":
        if not REFERENCE_ID.fullmatch(value):
            return (
                f"ReferenceId {_shorten(value)!r} must be 6-64 characters of A-Z a-z 0-9 _ -; "
                "a VOD VideoId belongs under `videos`"
            )
        return None
    if len(value) > MAX_ID_CHARS:
        return f"VideoId is {len(value)} characters long; a VOD VideoId is 32"
    if _BAD_CHARS.search(value):
        return f"VideoId {_shorten(value)!r} contains whitespace or a control character"
    return None


def _shorten(value: str) -> str:
    return value if len(value) <= 70 else value[:60] + "…"


def read_ids(source: IdSource) -> Iterator[IdEntry]:
    """Every ID of ``source`` in order. Raises ManifestError when the file cannot be read at all."""
    if source.inline is not None:
        for value, loc in source.inline:
            yield IdEntry(value, loc.file, loc.line, loc.col)
        return
    assert source.file is not None
    name = str(source.file)
    try:
        handle = open(source.file, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ManifestError(
            [source.loc.problem(f"cannot read ID file {name}: {exc.strerror or exc}; check the path")]
        ) from None
    with handle:
        try:
            if source.column is None:
                yield from _lines(handle, name)
            else:
                yield from _csv_column(handle, name, source)
        except UnicodeDecodeError:
            raise ManifestError([source.loc.problem(f"ID file {name} is not UTF-8 text; save it as UTF-8")]) from None
        except csv.Error as exc:
            raise ManifestError([source.loc.problem(f"ID file {name} is not valid CSV: {exc}")]) from None


def _lines(handle: TextIO, name: str) -> Iterator[IdEntry]:
    for number, raw in enumerate(handle, start=1):
        text = raw.rstrip("\r\n")
        if "#" in text:
            text = _TRAILING_COMMENT.sub("", text)
        value = text.strip()
        if not value or value[0] == "#":
            continue
        yield IdEntry(value, name, number, 1 if text[0] == value[0] else len(text) - len(text.lstrip()) + 1)


def _csv_column(handle: TextIO, name: str, source: IdSource) -> Iterator[IdEntry]:
    assert source.column is not None
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise ManifestError([source.loc.problem(f"CSV file {name} is empty; it needs a header row")])
    header = [h.strip() for h in header]
    if source.column not in header:
        close = [h for h in header if h.lower() == source.column.lower()]
        close = close or difflib.get_close_matches(source.column, header, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; the header has {', '.join(map(repr, header))}"
        loc = source.column_loc or source.loc
        raise ManifestError([loc.problem(f"CSV file {name} has no column {source.column!r}{hint}")])
    index = header.index(source.column)
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if index >= len(row):
            yield IdEntry("", name, line, None, f"this row has {len(row)} fields; column {source.column!r} is missing")
            continue
        yield IdEntry(row[index].strip(), name, line, None)
