"""The emulator's video catalogue and its SearchMedia: the documented Match subset, PageNo paging (first 5,000
results only) and ScrollToken traversal (up to 2,000,000 results, at most 100 records from the page last
served to the page asked for).

A catalogue file is JSON Lines, one video a line: {"VideoId", "CateId", "CreationTime"
("YYYY-MM-DDThh:mm:ssZ"), "Status", "Title", "Tags" (a list, or text with commas as VOD returns it)}.
Columns are kept compactly, so a million videos fit in a few hundred MB.

Its own small Match parser, not snapbatch's: the emulator stands for the service and must not share the
client's reading of the protocol.

A ScrollToken holds its query's result set, so tokens are bounded as a search service bounds its scroll
contexts: one expires SCROLL_TTL_S after its last use, and beyond MAX_SCROLLS live ones the least recently
used is dropped. VOD documents neither (nor the exact error): both are assumptions, and a token that is
gone is answered as the documented InvalidParameter error whose Message names the ScrollToken.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snapbatch.vod.api import TIMESTAMP_FORMAT

__all__ = [
    "MAX_PAGED",
    "MAX_SCROLLED",
    "MAX_SCROLLS",
    "SCROLL_TTL_S",
    "SCROLL_WINDOW",
    "Catalogue",
    "CatalogueError",
    "load_catalogue",
]

MAX_PAGED = 5000
MAX_SCROLLED = 2_000_000
SCROLL_WINDOW = 100  # records from the page last served to the page asked for, with a ScrollToken
MAX_PAGE_SIZE = 100
SCROLL_TTL_S = 600.0  # assumed: VOD does not say how long an unused ScrollToken lives
MAX_SCROLLS = 64  # live ScrollTokens kept at most (each holds up to 2,000,000 results: 16 MB)
_STATUSES = ("Uploading", "UploadFail", "UploadSucc", "Transcoding", "TranscodeFail", "Blocked", "Normal", "Checking")
_FIELDS = {"VideoId", "Title", "Tags", "CateId", "Status", "CreationTime"}
_TOKEN = re.compile(r"\s*(?:('[^']*')|(-?\d+)|([A-Za-z_][A-Za-z0-9_]*)|(!=|[=(),\[\]]))")

Predicate = Callable[[int], bool]


class CatalogueError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code, self.message = code, message


def _bad(message: str) -> CatalogueError:
    return CatalogueError("InvalidParameter", message)


def _epoch(text: str) -> int:
    try:
        return int(datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC).timestamp())
    except ValueError:
        raise _bad(f"The specified time {text!r} is not valid.") from None


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime(TIMESTAMP_FORMAT)


@dataclass
class _Scroll:
    query: tuple[str, str, str]  # Match, SortBy, PageSize
    found: array[int]
    page: int  # the page last served
    used_at: float  # monotonic seconds


class Catalogue:
    """Videos in columns. ``add`` appends one (an upload after a listing began)."""

    def __init__(self, *, scroll_ttl_s: float = SCROLL_TTL_S, max_scrolls: int = MAX_SCROLLS) -> None:
        self.ids: list[str] = []
        self.cate = array("q")
        self.ctime = array("q")
        self.status = bytearray()
        self.titles: list[str] = []
        self.tags: list[tuple[str, ...]] = []
        self.scroll_ttl_s, self.max_scrolls = scroll_ttl_s, max_scrolls
        self.scrolls: OrderedDict[str, _Scroll] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, row: Mapping[str, Any]) -> None:
        tags = row.get("Tags") or ()
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        status = str(row.get("Status", "Normal"))
        if status not in _STATUSES:
            raise ValueError(f"unknown Status {status!r}")
        self.ids.append(str(row["VideoId"]))
        self.cate.append(int(row.get("CateId", 0)))
        self.ctime.append(_epoch(str(row["CreationTime"])))
        self.status.append(_STATUSES.index(status))
        self.titles.append(str(row.get("Title", "")))
        self.tags.append(tuple(tags))

    # -- Match ----------------------------------------------------------------------------------------

    def compile(self, match: str) -> Predicate:
        tokens = [m for m in _TOKEN.finditer(match)]
        if "".join(m.group(0) for m in tokens).strip() != match.strip():
            raise _bad("The specified parameter Match is not valid.")
        toks = [m.group(0).strip() for m in tokens]
        pos = 0

        def peek() -> str:
            return toks[pos] if pos < len(toks) else ""

        def take() -> str:
            nonlocal pos
            tok = peek()
            if not tok:
                raise _bad("The specified parameter Match is not valid: it ends too early.")
            pos += 1
            return tok

        def value() -> str:
            tok = take()
            if tok.startswith("'"):
                return tok[1:-1]
            if tok.lstrip("-").isdigit():
                return tok
            raise _bad(f"The specified parameter Match is not valid near {tok!r}.")

        def group(inside: bool) -> Predicate:
            parts = [factor()]
            words = set()
            while peek().lower() in ("and", "or"):
                word = take().lower()
                if word == "or" and not inside:
                    raise _bad("The specified parameter Match is not valid: `or` needs parentheses.")
                words.add(word)
                parts.append(factor())
            if len(words) > 1:
                raise _bad("The specified parameter Match is not valid: mixed and/or.")
            if len(parts) == 1:
                return parts[0]
            if words == {"or"}:
                return lambda i: any(p(i) for p in parts)
            return lambda i: all(p(i) for p in parts)

        def factor() -> Predicate:
            if peek() == "(":
                take()
                inner = group(True)
                if take() != ")":
                    raise _bad("The specified parameter Match is not valid: unbalanced parentheses.")
                return inner
            field = take()
            if field not in _FIELDS:
                raise _bad(f"The specified field {field} is not supported in Match.")
            op = take()
            if op.lower() == "in":
                if take() != "(":
                    raise _bad("The specified parameter Match is not valid after in.")
                values = [value()]
                while peek() == ",":
                    take()
                    values.append(value())
                if take() != ")":
                    raise _bad("The specified parameter Match is not valid: unclosed value list.")
                return self.condition(field, values)
            if op == "!=":  # as vod-api.md lists it: whatever `field = value` would not select
                if peek() in ("(", "["):
                    raise _bad("The specified parameter Match is not valid: != takes one value.")
                equal = self.condition(field, [value()])
                return lambda i: not equal(i)
            if op != "=":
                raise _bad(f"The specified operator {op} is not valid in Match.")
            if peek() in ("(", "["):
                opening = take()
                low = value()
                if take() != ",":
                    raise _bad("The specified range in Match is not valid.")
                high = value()
                closing = take()
                if closing not in (")", "]"):
                    raise _bad("The specified range in Match is not valid.")
                return self.range(field, low, high, opening == "[", closing == "]")
            return self.condition(field, [value()])

        predicate = group(False)
        if pos != len(toks):
            raise _bad(f"The specified parameter Match is not valid near {toks[pos]!r}.")
        return predicate

    def condition(self, field: str, values: list[str]) -> Predicate:
        if field == "CreationTime":
            raise _bad("CreationTime takes a range in Match.")
        if field == "VideoId":
            wanted = set(values)
            return lambda i: self.ids[i] in wanted
        if field == "Title":  # fuzzy: the title contains the text
            return lambda i: any(v in self.titles[i] for v in values)
        if field == "Tags":
            tags = set(values)
            return lambda i: not tags.isdisjoint(self.tags[i])
        if field == "CateId":
            try:
                cates = {int(v) for v in values}
            except ValueError:
                raise _bad("CateId in Match must be a number.") from None
            return lambda i: self.cate[i] in cates
        codes = set()
        for v in values:
            if v not in _STATUSES:
                raise _bad(f"The specified Status {v} is not valid.")
            codes.add(_STATUSES.index(v))
        return lambda i: self.status[i] in codes

    def range(self, field: str, low: str, high: str, low_closed: bool, high_closed: bool) -> Predicate:
        if field != "CreationTime":
            raise _bad(f"The field {field} does not support a range query.")
        lo, hi = _epoch(low), _epoch(high)

        def inside(i: int) -> bool:
            t = self.ctime[i]
            return (t >= lo if low_closed else t > lo) and (t <= hi if high_closed else t < hi)

        return inside

    # -- SearchMedia ----------------------------------------------------------------------------------

    def matching(self, match: str, sort_by: str) -> array[int]:
        """Indices of the matching videos in SortBy order (ties by catalogue order)."""
        predicate = self.compile(match) if match.strip() else (lambda i: True)
        found = array("q", (i for i in range(len(self.ids)) if predicate(i)))
        if sort_by not in ("CreationTime:Desc", "CreationTime:Asc"):
            raise _bad(f"The specified parameter SortBy {sort_by} is not valid.")
        ctime = self.ctime
        if sort_by.endswith("Desc"):
            ordered = sorted(found, key=lambda i: (-ctime[i], i))
        else:
            ordered = sorted(found, key=lambda i: (ctime[i], i))
        return array("q", ordered)

    def search(self, params: Mapping[str, str], request_id: str, now: float | None = None) -> dict[str, Any]:
        """A SearchMedia answer, or CatalogueError. ``now``: monotonic seconds, for ScrollToken expiry."""
        now = time.monotonic() if now is None else now
        while self.scrolls and next(iter(self.scrolls.values())).used_at + self.scroll_ttl_s <= now:
            self.scrolls.popitem(last=False)
        if params.get("SearchType", "video") != "video":
            raise _bad("This emulator's catalogue holds videos only.")
        match, sort_by = params.get("Match", ""), params.get("SortBy", "CreationTime:Desc")
        try:
            page_no = int(params.get("PageNo", "1"))
            size = int(params.get("PageSize", "10"))
        except ValueError:
            raise _bad("PageNo and PageSize must be whole numbers.") from None
        if page_no < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise _bad(f"PageNo must be at least 1 and PageSize 1-{MAX_PAGE_SIZE}.")
        token = params.get("ScrollToken")
        query = (match, sort_by, str(size))
        if token:
            scroll = self.scrolls.get(token)
            if scroll is None:
                raise _bad("The specified ScrollToken has expired or does not exist; search again without it.")
            if scroll.query != query:
                raise _bad("The specified ScrollToken is not valid for this query.")
            found, last = scroll.found, scroll.page
            if abs(page_no - last) * size > SCROLL_WINDOW:
                raise _bad(
                    f"PageNo {page_no} is more than {SCROLL_WINDOW} records away from page {last} of this scroll."
                )
            if page_no * size > MAX_SCROLLED:
                raise _bad(f"A ScrollToken traversal reaches the first {MAX_SCROLLED} results only.")
            scroll.page, scroll.used_at = page_no, now
            self.scrolls.move_to_end(token)
        else:
            if page_no * size > MAX_PAGED:
                raise _bad(f"PageNo and PageSize reach the first {MAX_PAGED} results only; use ScrollToken.")
            found = self.matching(match, sort_by)
            token = secrets.token_hex(16)
            self.scrolls[token] = _Scroll(query, found, page_no, now)
            while len(self.scrolls) > self.max_scrolls:
                self.scrolls.popitem(last=False)
        start = (page_no - 1) * size
        wanted = {f.strip() for f in params.get("Fields", "").split(",") if f.strip()}
        media = [self.media(i, wanted) for i in found[start : start + size]]
        return {"RequestId": request_id, "Total": len(found), "ScrollToken": token, "MediaList": media}

    def media(self, i: int, fields: Iterable[str]) -> dict[str, Any]:
        video: dict[str, Any] = {"VideoId": self.ids[i]}
        for name in fields:
            if name == "Title":
                video["Title"] = self.titles[i]
            elif name == "CateId":
                video["CateId"] = self.cate[i]
            elif name == "Status":
                video["Status"] = _STATUSES[self.status[i]]
            elif name == "CreationTime":
                video["CreationTime"] = _iso(self.ctime[i])
            elif name == "Tags":
                video["Tags"] = ",".join(self.tags[i])
        created = _iso(self.ctime[i])
        return {"MediaType": "video", "MediaId": self.ids[i], "CreationTime": created, "Video": video}


def load_catalogue(path: Path) -> Catalogue:
    """A JSON Lines catalogue file, read line by line."""
    catalogue = Catalogue()
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                catalogue.add(json.loads(line))
            except (ValueError, KeyError, TypeError, CatalogueError) as exc:
                detail = exc.message if isinstance(exc, CatalogueError) else str(exc)
                raise ValueError(f"{path}:{number}: not a catalogue video ({detail})") from None
    return catalogue
