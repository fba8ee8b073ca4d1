"""Reading a job's IDs: inline values, a text file (one ID a line) or a CSV column; checking each ID."""

from __future__ import annotations

import csv
import difflib
import io
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple, TextIO

from snapbatch.errors import ManifestError, Problem, echo
from snapbatch.models import IdSource
from snapbatch.vod.api import REFERENCE_ID

__all__ = ["MAX_LINE_CHARS", "IdEntry", "check_id", "open_regular", "read_ids"]

_VIDEO_ID = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # printable ASCII but space and comma
_TRAILING_COMMENT = re.compile(r"\s+#.*$")
MAX_ID_CHARS = 256
MAX_LINE_CHARS = 65536  # a longer line is not an ID list: an error, never a memory hog


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
                f"ReferenceId {echo(value)} must be 6-64 characters of A-Z a-z 0-9 _ -; "
                "a VOD VideoId belongs under `videos`"
            )
        return None
    if len(value) > MAX_ID_CHARS:
        return f"VideoId is {len(value)} characters long; a VOD VideoId is 32"
    if not _VIDEO_ID.fullmatch(value):
        bad = next(c for c in value if not _VIDEO_ID.fullmatch(c))
        return (
            f"VideoId {echo(value)} contains {_describe(bad)}; a VideoId is printable ASCII without spaces or "
            "commas (in practice 32 hexadecimal characters)"
        )
    return None


def _describe(char: str) -> str:
    if char.isspace():
        return "whitespace"
    if char == ",":
        return "a comma (is this a CSV file? name its column with {file: PATH, column: NAME})"
    if unicodedata.bidirectional(char) in ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI") or char in (
        "\u200e",
        "\u200f",
        "\u061c",
    ):
        return "a bidirectional control character"
    if not char.isprintable():
        return "a control character"
    return f"the non-ASCII character {char!r}"


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, refusing at once anything but a regular file: a FIFO would block, a device
    such as /dev/zero never end, a directory mean nothing. OSError when it cannot be opened; ValueError saying
    what it is instead. Opened without blocking and checked on the open descriptor, so no swap can slip by."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a directory"
                if stat.S_ISDIR(mode)
                else "a FIFO (named pipe)"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "not a regular file"
            )
            raise ValueError(f"is {kind}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_ids(source: IdSource) -> Iterator[IdEntry]:
    """Every ID of ``source`` in order. Raises ManifestError when the file cannot be read at all."""
    if source.inline is not None:
        for value, loc in source.inline:
            yield IdEntry(value, loc.file, loc.line, loc.col)
        return
    assert source.file is not None
    name = str(source.file)
    try:
        raw = open_regular(source.file)
    except OSError as exc:
        raise ManifestError(
            [source.loc.problem(f"cannot read ID file {name}: {exc.strerror or exc}; check the path")]
        ) from None
    except ValueError as exc:
        raise ManifestError([source.loc.problem(f"ID file {name} {exc}; name a file of IDs")]) from None
    with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle:
        try:
            if source.column is None:
                yield from _lines(handle, name, source)
            else:
                yield from _csv_column(handle, name, source)
        except UnicodeDecodeError:
            raise ManifestError([source.loc.problem(f"ID file {name} is not UTF-8 text; save it as UTF-8")]) from None


def _bounded(handle: TextIO, name: str, source: IdSource) -> Iterator[str]:
    """The lines of ``handle``, each at most MAX_LINE_CHARS long; a longer one is an error at its line."""
    number = 0
    while line := handle.readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            raise ManifestError(
                [
                    Problem(
                        name,
                        number,
                        1,
                        source.loc.where,
                        f"this line is over {MAX_LINE_CHARS} characters long; an ID file has one ID a line "
                        "(is this the right file?)",
                    )
                ]
            )
        yield line


def _lines(handle: TextIO, name: str, source: IdSource) -> Iterator[IdEntry]:
    for number, raw in enumerate(_bounded(handle, name, source), start=1):
        text = raw.rstrip("\r\n")
        if "#" in text:
            text = _TRAILING_COMMENT.sub("", text)
        value = text.strip()
        if not value or value[0] == "#":
            continue
        yield IdEntry(value, name, number, 1 if text[0] == value[0] else len(text) - len(text.lstrip()) + 1)


def _csv_column(handle: TextIO, name: str, source: IdSource) -> Iterator[IdEntry]:
    """The ID column of a CSV file, strictly: duplicate header names, an unclosed quote and rows with another
    number of fields than the header are errors at FILE:LINE, the line where the row starts."""
    assert source.column is not None
    where = source.loc.where
    reader = csv.reader(_bounded(handle, name, source), strict=True)
    start = 1

    def fail(message: str) -> ManifestError:
        return ManifestError([Problem(name, start, 1, where, message)])

    def rows() -> Iterator[list[str]]:
        nonlocal start
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "unexpected end of data" in str(exc) or "EOF" in str(exc):
                    raise fail("a quoted field that starts on this row is never closed; close its quote") from None
                raise fail(f"not valid CSV: {exc}; quote fields that hold a quote or a comma") from None
            yield row

    found = rows()
    header = next(found, None)
    if header is None:
        raise ManifestError([source.loc.problem(f"CSV file {name} is empty; it needs a header row")])
    header = [h.strip() for h in header]
    seen: set[str] = set()
    for h in header:
        if h and h in seen:
            raise fail(f"the header names the column {echo(h)} twice; rename one so the column read is certain")
        seen.add(h)
    if source.column not in header:
        close = [h for h in header if h.lower() == source.column.lower()]
        close = close or difflib.get_close_matches(source.column, header, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; the header has {', '.join(map(echo, header[:20]))}"
        loc = source.column_loc or source.loc
        raise ManifestError([loc.problem(f"CSV file {name} has no column {echo(source.column)}{hint}")])
    index = header.index(source.column)
    for row in found:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield IdEntry(
                "",
                name,
                start,
                None,
                f"this row has {len(row)} fields and the header {len(header)}; every row needs "
                "as many (quote a field that holds a comma)",
            )
            continue
        yield IdEntry(row[index].strip(), name, start, None)
