"""Search jobs' video lists: listed once through SearchMedia, frozen into the batch's state, resumable.

Paging follows SearchMedia's documented traversal: PageSize 100, PageNo 1, 2, ... with the ScrollToken of
the previous answer (PageNo alone reaches only the first 5,000 results; a ScrollToken traversal reaches
2,000,000). Each page's VideoIds, the ScrollToken and the page number are committed in one transaction, so
after a kill -9 the listing continues from the last committed page and memory never holds more than a
page. Once complete, a listing is frozen: later runs send exactly that set until `run --relist`.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio

from snapbatch.errors import SnapbatchError, echo
from snapbatch.models import EXPIRED, FAILED, FATAL, THROTTLED, Outcome, Search
from snapbatch.run.limiter import Limiter
from snapbatch.run.state import State

__all__ = [
    "MAX_SCROLLED",
    "PAGE_SIZE",
    "SEARCH_QPS",
    "ListingError",
    "ListingInfo",
    "ListingStore",
    "Searcher",
    "freeze_all",
    "frozen_listings",
    "list_videos",
    "listing_mark",
]

PAGE_SIZE = 100
SEARCH_QPS = 50.0  # SearchMedia's documented limit per account
MAX_SCROLLED = 2_000_000
_SERVER_TEXT_CHARS = 300  # the most of a server's Code or Message an error quotes
_SELECT = "SELECT job, match, sort_by, pages, listed, total, started_at, finished_at, scroll_token FROM listings"


class ListingError(SnapbatchError):
    """A listing could not be completed; ``exit`` names the exit code's kind (stopped, fatal, usage)."""

    def __init__(self, message: str, exit: str = "stopped") -> None:
        super().__init__(message)
        self.exit = exit


class Searcher(Protocol):
    async def call(self, action: str, params: dict[str, str]) -> tuple[Outcome, dict[str, Any] | None]: ...


@dataclass(frozen=True)
class ListingInfo:
    job: str
    match: str
    sort_by: str
    pages: int
    listed: int
    total: int | None
    started_at: float
    finished_at: float | None
    scroll_token: str | None = None

    @property
    def complete(self) -> bool:
        return self.finished_at is not None


class ListingStore:
    """The listing tables of one state file (or of a scratch file, for `plan`). The tables belong to the
    state's schema (snapbatch.run.state.MIGRATIONS); every write goes through the State's one transaction,
    so a run's listing is refused, like its requests, as soon as the file is no longer the one it locked.

    Given a path, the store opens (and on close, closes) a State of its own."""

    def __init__(self, state: State | Path) -> None:
        self._owned = not isinstance(state, State)
        self.state = State(state) if not isinstance(state, State) else state  # creates or migrates the file
        self.path = self.state.path

    def close(self) -> None:
        if self._owned:
            self.state.close()

    @staticmethod
    def read(path: Path) -> list[ListingInfo]:
        """Every listing recorded in ``path`` (none when it has no listing tables, or does not exist)."""
        if not path.exists():
            return []
        try:
            # not mode=ro: a read-only connection cannot checkpoint, and would leave the -wal and -shm files
            # behind after the last writer closed
            db = sqlite3.connect(path)
        except sqlite3.Error:
            return []
        try:
            rows = db.execute(f"{_SELECT} ORDER BY job").fetchall()
        except sqlite3.Error:
            return []
        finally:
            db.close()
        return [ListingInfo(*row) for row in rows]

    def info(self, job: str) -> ListingInfo | None:
        rows = self.state.query(f"{_SELECT} WHERE job = ?", (job,))
        return ListingInfo(*rows[0]) if rows else None

    def start(self, job: str, search: Search, now: float) -> ListingInfo:
        with self.state.transaction() as db:
            db.execute("DELETE FROM listed_videos WHERE job = ?", (job,))
            db.execute("DELETE FROM listings WHERE job = ?", (job,))
            db.execute(
                "INSERT INTO listings(job, match, sort_by, started_at) VALUES (?, ?, ?, ?)",
                (job, search.match, search.sort_by, now),
            )
        return self._info(job)

    def add_page(self, info: ListingInfo, videos: list[str], token: str | None, total: int | None) -> ListingInfo:
        """Commit one page: its videos, the ScrollToken for the next and the progress, together."""
        rows = [(info.job, info.listed + i, video) for i, video in enumerate(videos, start=1)]
        with self.state.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO listed_videos(job, seq, video) VALUES (?, ?, ?)", rows)
            db.execute(
                "UPDATE listings SET scroll_token = ?, pages = pages + 1, listed = listed + ?, total = ? WHERE job = ?",
                (token, len(videos), total, info.job),
            )
        return self._info(info.job)

    def finish(self, job: str, now: float) -> ListingInfo:
        with self.state.transaction() as db:
            db.execute("UPDATE listings SET finished_at = ?, scroll_token = NULL WHERE job = ?", (now, job))
        return self._info(job)

    def _info(self, job: str) -> ListingInfo:
        info = self.info(job)
        assert info is not None  # just written
        return info

    def videos(self, job: str) -> Iterator[str]:
        """The job's listed VideoIds in listing order, streamed in chunks on a connection of its own."""
        return _stream(self.path, job)

    def listings(self, jobs: list[str]) -> dict[str, Callable[[], Iterator[str]]]:
        """For expand: each job's frozen list, as a function that streams it."""
        return frozen_listings(self.path, jobs)


def _stream(path: Path, job: str) -> Iterator[str]:
    # an abandoned ingest may let this generator be closed by another thread
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        last = 0
        while True:
            rows = db.execute(
                "SELECT seq, video FROM listed_videos WHERE job = ? AND seq > ? ORDER BY seq LIMIT 5000",
                (job, last),
            ).fetchall()
            if not rows:
                return
            for _, video in rows:
                yield video
            last = rows[-1][0]
    finally:
        db.close()


def frozen_listings(path: Path, jobs: list[str]) -> dict[str, Callable[[], Iterator[str]]]:
    """Each job's list in the state file at ``path``, as a function that streams it; reads only (status)."""
    return {job: (lambda job=job: _stream(path, job)) for job in jobs}  # type: ignore[misc]


def listing_mark(infos: list[ListingInfo]) -> str:
    """What the manifest's fingerprint gains from its search jobs' lists: it changes whenever one is listed
    again, so the next run ingests the new list."""
    return ";".join(f"{info.job}@{info.started_at!r}:{info.listed}" for info in infos)


async def list_videos(
    store: ListingStore,
    job: str,
    search: Search,
    client: Searcher,
    limiter: Limiter,
    *,
    relist: bool = False,
    on_page: Callable[[ListingInfo], None] = lambda info: None,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    max_attempts: int = 8,
    unreachable_after: int = 3,
    backoff_base_s: float = 0.5,
    backoff_cap_s: float = 30.0,
) -> ListingInfo:
    """List ``search`` into ``store`` for ``job``, continuing an unfinished listing; a complete one is
    returned as it is (frozen) unless ``relist``. Raises ListingError when it cannot finish."""
    rng = rng or random.Random()
    info = store.info(job)
    if info is not None and (info.match, info.sort_by) != (search.match, search.sort_by) and not relist:
        taken = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.started_at))
        raise ListingError(
            f"job {job!r}'s videos were listed at {taken} for another query ({info.match!r}, "
            f"{info.sort_by}); run with --relist to list the new query, or give the batch a new name",
            "usage",
        )
    if info is not None and info.complete and not relist:
        return info
    if info is None or relist:
        info = await anyio.to_thread.run_sync(store.start, job, search, clock())
    reached = False
    failures = 0
    while True:
        params = {
            "Match": search.match,
            "SortBy": search.sort_by,
            "SearchType": "video",
            # no Fields: by default SearchMedia returns only MediaId (the VideoId), CreationTime and MediaType,
            # the least it can, and all that is needed
            "PageNo": str(info.pages + 1),
            "PageSize": str(PAGE_SIZE),
        }
        if info.scroll_token:
            params["ScrollToken"] = info.scroll_token
        await limiter.acquire()
        outcome, body = await client.call("SearchMedia", params)
        if outcome.http_status is not None:
            reached = True
        if outcome.http_status == 200 and body is not None and _no_media(body):
            # nothing matched: the answer may leave MediaList out altogether
            body = {**body, "MediaList": []}
        if outcome.http_status == 200 and body is not None and isinstance(body.get("MediaList"), list):
            failures = 0
            media = body["MediaList"]
            videos = [str(m.get("MediaId") or (m.get("Video") or {}).get("VideoId") or "") for m in media]
            total = body.get("Total")
            if total is not None and int(total) > MAX_SCROLLED:
                # known from the first page: no need to list 2,000,000 videos before saying so
                raise _too_many(job)
            info = await anyio.to_thread.run_sync(
                store.add_page,
                info,
                [v for v in videos if v],
                body.get("ScrollToken") or info.scroll_token,
                int(total) if total is not None else None,
            )
            on_page(info)
            if len(media) < PAGE_SIZE or (info.total is not None and info.listed >= info.total):
                return await anyio.to_thread.run_sync(store.finish, job, clock())
            if info.pages * PAGE_SIZE >= MAX_SCROLLED:
                raise _too_many(job)
            continue
        if outcome.kind == FATAL:
            raise ListingError(f"SearchMedia answered {_said(outcome.code)}: {_said(outcome.message)}", "fatal")
        if outcome.kind == FAILED or (outcome.http_status == 200 and outcome.code is None and body is not None):
            if info.scroll_token and "ScrollToken" in (outcome.message or ""):
                # The service no longer knows the token (a listing resumed long after): start over.
                info = await anyio.to_thread.run_sync(store.start, job, search, clock())
                continue
            raise ListingError(
                f"SearchMedia refused job {job!r}'s query: {_said(outcome.code or outcome.http_status)}: "
                f"{_said(outcome.message)}; "
                "check the Match expression",
                "usage",
            )
        failures += 1
        if outcome.kind == THROTTLED:
            limiter.throttled()
        if not reached and failures >= unreachable_after:
            raise ListingError(
                f"the endpoint never answered SearchMedia for job {job!r} ({_said(outcome.message)}); check the "
                "endpoint and the network (the listing resumes where it stopped)"
            )
        if failures >= max_attempts:
            raise ListingError(
                f"SearchMedia kept failing for job {job!r} ({_said(outcome.code or outcome.message)}) after "
                f"{info.listed} videos; run again to continue the listing where it stopped"
            )
        if outcome.kind != EXPIRED:
            await anyio.sleep(rng.uniform(0, min(backoff_cap_s, backoff_base_s * 2**failures)))


def _said(text: object) -> str:
    """What a server said (a Code, a Message), as an error quotes it: escaped, and shortened when long."""
    return echo(text, _SERVER_TEXT_CHARS, quote=False)


def _too_many(job: str) -> ListingError:
    return ListingError(
        f"job {job!r}'s query matches more than {MAX_SCROLLED} videos, the most SearchMedia lists; "
        "narrow the Match expression (e.g. a CreationTime range) or split the job",
        "usage",
    )


def _no_media(body: dict[str, Any]) -> bool:
    """An answer without a MediaList that says nothing matched (Total 0), not an error."""
    total = body.get("Total")
    return body.get("MediaList") is None and "Code" not in body and str(total) == "0"


async def freeze_all(
    store: ListingStore,
    jobs: list[tuple[str, Search]],
    client: Searcher,
    limiter: Limiter,
    *,
    relist: bool = False,
    on_page: Callable[[ListingInfo], None] = lambda info: None,
    on_done: Callable[[ListingInfo, bool], None] = lambda info, fresh: None,
) -> tuple[dict[str, Callable[[], Iterator[str]]], str]:
    """List (or find frozen) every search job; return their lists for expand and a mark that changes
    whenever one of them is listed again. ``on_done(info, fresh)``: fresh when listed by this call."""
    infos = []
    for name, search in jobs:
        before = store.info(name)
        info = await list_videos(store, name, search, client, limiter, relist=relist, on_page=on_page)
        on_done(info, before is None or not before.complete or relist)
        infos.append(info)
    return store.listings([name for name, _ in jobs]), listing_mark(infos)
