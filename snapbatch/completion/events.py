"""The event store: every SnapshotComplete event the receiver accepted, in a SQLite file of its own.

One store serves any number of batches: an event names its job, not its batch. Each batch's state absorbs
the events it knows (``absorb``) whenever snapbatch opens it for run, status, report or poll, with a
cursor in the state's meta table. The receiver never touches a state file, so it never waits for a run's
lock, and a run never waits for it. WAL with synchronous=FULL: an event acknowledged with 200 survives the
process being killed, and the machine losing power.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snapbatch.errors import StateError
from snapbatch.models import EXTEND_TAG
from snapbatch.run.state import FAIL, SUCCESS, Completion, State

__all__ = ["EventRecord", "EventStore", "absorb", "default_events_path", "parse_event"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # dedup: JobId|status (or the body's hash when the event names no job), so a redelivery adds nothing
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, dedup TEXT NOT NULL UNIQUE, job_id TEXT, "
    "request_key TEXT, video TEXT, status TEXT NOT NULL, error_code TEXT, error_message TEXT, "
    "completed_at REAL, snapshots TEXT, received_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_job_id ON events(job_id)",
)
LOOKBACK_S = 120.0  # see absorb: how far back a JobId recorded after its event was passed is looked for


def default_events_path(directory: Path) -> Path:
    return directory / ".snapbatch" / "events.sqlite3"


@dataclass(frozen=True, slots=True)
class EventRecord:
    dedup: str
    job_id: str | None
    request_key: str | None
    video: str | None
    status: str  # "success" or "fail"
    error_code: str | None
    error_message: str | None
    completed_at: float | None
    snapshots: str | None  # JSON [{"type", "count", "url"}]


def _time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:  # fromisoformat: a tenth of strptime's cost, on the receiver's path for every event
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _key(extend: Any) -> str | None:
    """snapbatch's request key from the event's Extend (a JSON string, as the service echoes it back)."""
    if isinstance(extend, str):
        try:
            extend = json.loads(extend)
        except (ValueError, RecursionError):  # the user's own text, possibly anything
            return None
    value = extend.get(EXTEND_TAG) if isinstance(extend, dict) else None
    return value if isinstance(value, str) and value else None


def parse_event(body: bytes) -> list[EventRecord] | None:
    """A SnapshotComplete event -> one record per job it names (normally one); [] for another event type;
    None when the body is not an event at all, or not one that can be stored (the receiver answers 400)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested a few thousand deep
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("EventType") != "SnapshotComplete":
        return []
    raw_infos = doc.get("SnapshotInfos") or []
    if not isinstance(raw_infos, list):
        return None
    infos = [i for i in raw_infos if isinstance(i, dict)]
    if any(not isinstance(i.get("JobId", ""), str) for i in infos):
        return None
    status = SUCCESS if str(doc.get("Status", "")).lower() == "success" else FAIL
    snapshots = [
        {"type": i.get("SnapshotType"), "count": i.get("SnapshotCount"), "url": i.get("SnapshotRegular")} for i in infos
    ]
    text = json.dumps(snapshots, separators=(",", ":"), ensure_ascii=False) if snapshots else None

    def record(dedup: str, job_id: str | None) -> EventRecord:
        return EventRecord(
            dedup,
            job_id,
            _key(doc.get("Extend")),
            str(doc["VideoId"]) if doc.get("VideoId") else None,
            status,
            str(doc["ErrorCode"]) if doc.get("ErrorCode") else None,
            str(doc["ErrorMessage"]) if doc.get("ErrorMessage") else None,
            _time(doc.get("EventTime")),
            text,
        )

    job_ids = list(dict.fromkeys(str(i["JobId"]) for i in infos if i.get("JobId")))
    if not job_ids:
        records = [record(hashlib.sha256(body).hexdigest(), None)]
    else:
        records = [record(f"{job}|{status}", job) for job in job_ids]
    # JSON may carry lone surrogates ("\ud800"), which SQLite cannot store: refuse them here, not in the writer
    try:
        for r in records:
            for text in (r.job_id, r.request_key, r.video, r.error_code, r.error_message, r.snapshots):
                if text is not None:
                    text.encode()
    except UnicodeEncodeError:
        return None
    return records


class EventStore:
    """One event store file. Blocking and thread-safe; the receiver calls ``add`` from a worker thread."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time, create: bool = True) -> None:
        self.path, self.clock = path, clock
        self._lock = threading.Lock()
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.exists():
                raise StateError(f"no event store at {path}")
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self.db.execute(statement)
            self.db.execute("INSERT OR IGNORE INTO meta(name, value) VALUES ('store_id', ?)", (secrets.token_hex(8),))
            self.store_id = str(self.db.execute("SELECT value FROM meta WHERE name = 'store_id'").fetchone()[0])
        except sqlite3.Error as exc:
            raise StateError(
                f"cannot open the event store {path}: {exc}; check the path, its permissions and free disk space"
            ) from None

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def add(self, records: Iterable[EventRecord]) -> int:
        """Record events in one transaction (durable when this returns); returns how many were new."""
        now = self.clock()
        rows = [
            (
                r.dedup,
                r.job_id,
                r.request_key,
                r.video,
                r.status,
                r.error_code,
                r.error_message,
                r.completed_at,
                r.snapshots,
                now,
            )
            for r in records
        ]
        with self._lock:
            try:
                before = self.db.total_changes
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    self.db.executemany(
                        "INSERT OR IGNORE INTO events(dedup, job_id, request_key, video, status, error_code, "
                        "error_message, completed_at, snapshots, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
                return self.db.total_changes - before
            except sqlite3.Error as exc:
                raise StateError(f"cannot write the event store {self.path}: {exc}") from None

    _COLUMNS = "id, job_id, request_key, status, completed_at, error_code, error_message, snapshots"

    @staticmethod
    def _completion(raw: tuple[Any, ...]) -> Completion:
        return Completion(raw[1], raw[3], at=raw[4], code=raw[5], message=raw[6], snapshots=raw[7], key=raw[2])

    def since(self, after_id: int, limit: int) -> list[tuple[int, Completion]]:
        """Events naming a job recorded after ``after_id``, oldest first."""
        with self._lock:
            raws = self.db.execute(
                f"SELECT {self._COLUMNS} FROM events WHERE id > ? AND job_id IS NOT NULL ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [(int(raw[0]), self._completion(raw)) for raw in raws]

    def last_id(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def for_jobs(self, job_ids: list[str]) -> list[Completion]:
        found: list[Completion] = []
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            with self._lock:
                raws = self.db.execute(
                    f"SELECT {self._COLUMNS} FROM events WHERE job_id IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
            found += [self._completion(raw) for raw in raws]
        return found

    def count(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def absorb(state: State, store: EventStore) -> int:
    """Record in ``state`` what the store's events say about its jobs; returns how many requests changed.

    Events are read from where the last absorb of this store stopped. An event can be passed over before
    its JobId reaches the state (a run commits the answer just after the job completed), so the jobs
    submitted since shortly before the last absorb and still open are also looked up by JobId.
    """
    same_store = state.meta("events_store") == store.store_id
    cursor = int(state.meta("events_seen") or 0) if same_store else 0
    last = float(state.meta("events_absorbed_at") or 0) if same_store else 0.0
    started = state.clock()
    changed = 0
    while True:
        page = store.since(cursor, 5000)
        if not page:
            break
        changed += state.record_completions([c for _, c in page])
        cursor = page[-1][0]
        state.set_meta({"events_store": store.store_id, "events_seen": str(cursor)})
    if last:
        late = state.unfinished_jobs_since(last - LOOKBACK_S)
        if late:
            changed += state.record_completions(store.for_jobs(late))
    state.set_meta({"events_store": store.store_id, "events_seen": str(cursor), "events_absorbed_at": str(started)})
    return changed
