"""The SQLite state store of one batch: the lock, every request and what became of it.

WAL mode with synchronous=NORMAL: a committed write survives the process being killed at any instant.
The intent ("sending") is committed before a call goes out and the outcome right after it returns, so
after a kill whatever was in flight is found as "sending" and becomes "in_doubt".

The schema lives here and only here. ``PRAGMA user_version`` is its version: 0 is the first release's
tables (``_SCHEMA``), and ``MIGRATIONS[n]`` takes a file from version n to n + 1, each in one transaction,
so a state file written by an older snapbatch is upgraded in place when it is opened, and one written by
a newer snapbatch is refused rather than misread.

One run at a time is tied to the file's identity, not to a path: the run lock is an flock on the database
file itself (any path to it, a symlink or another relative path, meets the same lock, and there is no
separate lock file to delete), and a run lease inside the database names the holder, which a second run
checks too. A run notices when the file at its path is no longer the one it has open (deleted, replaced).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from snapbatch.errors import LockedError, StateError, echo
from snapbatch.models import ACCEPTED, Outcome, Request, RequestStatus, tagged

__all__ = [
    "COMPLETIONS",
    "LEASE_EXPIRY_S",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Change",
    "Completion",
    "Intent",
    "Row",
    "Settled",
    "State",
    "Unsent",
    "default_state_path",
]

LEASE_EXPIRY_S = 60.0  # a lease not renewed for this long is a dead run's, wherever it ran
_LOCK_RETRY_S = 1.0  # a lock held only for a moment (status probing it) is waited for this long
_TABLES = {"meta", "variants", "requests"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS variants (id INTEGER PRIMARY KEY, params TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    job TEXT NOT NULL,
    template TEXT,
    id_kind TEXT NOT NULL,
    video TEXT NOT NULL,
    variant INTEGER NOT NULL REFERENCES variants(id),
    generation INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    job_id TEXT,
    request_id TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    submitted_at REAL
);
CREATE INDEX IF NOT EXISTS requests_status_seq ON requests(status, seq);
CREATE INDEX IF NOT EXISTS requests_generation_status ON requests(generation, status);
"""
# What became of a submitted request's job: NULL (nothing heard yet), or one of these.
PROCESSING, SUCCESS, FAIL = "processing", "success", "fail"
COMPLETIONS = (PROCESSING, SUCCESS, FAIL)

# MIGRATIONS[n] upgrades a version-n file to n + 1. Append only; never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: what became of each job (SnapshotComplete events and GetJobDetail answers), found by JobId
    (
        "ALTER TABLE requests ADD COLUMN completion TEXT",
        "ALTER TABLE requests ADD COLUMN completed_at REAL",
        "ALTER TABLE requests ADD COLUMN completion_code TEXT",
        "ALTER TABLE requests ADD COLUMN completion_message TEXT",
        "ALTER TABLE requests ADD COLUMN snapshots TEXT",
        "ALTER TABLE requests ADD COLUMN checked_at REAL",
        "CREATE INDEX requests_job_id ON requests(job_id) WHERE job_id IS NOT NULL",
        "CREATE INDEX requests_open_jobs ON requests(status, completion, checked_at)",
    ),
    # 2: search jobs' lists (snapbatch.run.listings): each listing's query and progress (the ScrollToken to
    # continue from), and the VideoIds listed, in order; frozen once finished_at is set
    (
        "CREATE TABLE listings (job TEXT PRIMARY KEY, match TEXT NOT NULL, sort_by TEXT NOT NULL, "
        "scroll_token TEXT, pages INTEGER NOT NULL DEFAULT 0, listed INTEGER NOT NULL DEFAULT 0, total INTEGER, "
        "started_at REAL NOT NULL, finished_at REAL)",
        "CREATE TABLE listed_videos (job TEXT NOT NULL, seq INTEGER NOT NULL, video TEXT NOT NULL, "
        "PRIMARY KEY (job, seq)) WITHOUT ROWID",
    ),
    # 3: what `report --html` charts: attempts by the second their outcome was recorded (wall clock) and by
    # outcome kind, kept with the outcomes themselves; one row a kind a second, whatever the number of calls
    (
        "CREATE TABLE attempt_seconds (second INTEGER NOT NULL, kind TEXT NOT NULL, calls INTEGER NOT NULL, "
        "PRIMARY KEY (second, kind)) WITHOUT ROWID",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def default_state_path(manifest: Path, batch: str) -> Path:
    return manifest.parent / ".snapbatch" / f"{batch}.sqlite3"


@dataclass(frozen=True, slots=True)
class Intent:
    """The call for ``key`` is about to go out: it counts as an attempt, and after a crash as in doubt."""

    key: str


@dataclass(frozen=True, slots=True)
class Settled:
    """An attempt for ``key`` came back with ``outcome``."""

    key: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Unsent:
    """An intent for ``key`` whose call never went out: back to ``status``, the attempt not counted."""

    key: str
    status: RequestStatus


Change = Intent | Settled | Unsent


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    seq: int
    job: str
    template: str | None
    id_kind: str
    video: str
    params: dict[str, str]
    status: RequestStatus
    attempts: int
    job_id: str | None
    request_id: str | None
    error_code: str | None
    error_message: str | None
    submitted_at: float | None
    completion: str | None = None  # None (nothing heard), "processing", "success" or "fail"
    completed_at: float | None = None
    completion_code: str | None = None
    completion_message: str | None = None
    snapshots: str | None = None  # JSON: [{"type", "count", "url"}] from the SnapshotComplete event


@dataclass(frozen=True, slots=True)
class Completion:
    """What the service said about one job: an event or a GetJobDetail answer. ``key``: the request key
    the job's UserData.Extend carried, which resolves a request whose answer was lost."""

    job_id: str
    status: str  # one of COMPLETIONS
    at: float | None = None  # when the job completed (None while processing)
    code: str | None = None
    message: str | None = None
    snapshots: str | None = None
    key: str | None = None


class State:
    """One open state file. Methods are blocking and thread-safe; call them through a worker thread."""

    def __init__(self, path: Path, *, clock: Any = time.time, create: bool = True) -> None:
        """Open (with ``create``, make) the state file at ``path``. Without ``create`` (status, report) the
        file must already be a snapbatch state file, and nothing is written to it."""
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._fd: int | None = None  # the database file itself, opened once: its identity and its run lock
        self._loop_db: sqlite3.Connection | None = None  # the event loop's writer (apply_at_once); None once closed
        self._loop_writes = 0  # apply_at_once's commits since it last left one to a thread
        self._locked = False
        self._lease_token: str | None = None
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            # One name for the file whatever path was given (a symlink, ../x): SQLite names its WAL after it.
            real = path.resolve()
            if real.exists() and not real.is_file():
                raise StateError(
                    f"the state file {path} is not a regular file (a directory, FIFO or device); give a file path"
                )
            target = str(real) if create else f"file:{_uri_path(real)}?mode=rw"
            self.db = sqlite3.connect(target, check_same_thread=False, isolation_level=None, uri=not create)
            self.db.execute("PRAGMA busy_timeout=5000")
            if create:
                self.db.execute("PRAGMA journal_mode=WAL")
            else:  # never turn a file that is not a state file into one
                tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables >= _TABLES:
                    self.db.close()
                    raise StateError(
                        f"{path} is not a snapbatch state file (it has no {', '.join(sorted(_TABLES - tables))} "
                        "table); give the --state of a batch"
                    )
            self._migrate()
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
            opened = os.fstat(self._fd)
            self.identity = (opened.st_dev, opened.st_ino)
            if opened.st_nlink > 1:
                raise StateError(
                    f"the state file {path} has {opened.st_nlink} hard links; SQLite keeps its journal beside the "
                    "name it is opened by, so two names for one state file can corrupt it: remove the other links"
                )
            # Reads (progress, status, the next page of work) get a connection of their own: in WAL mode they
            # never wait for the writer, and a long count never holds up an intent before a due call.
            self.reader = sqlite3.connect(target, check_same_thread=False, isolation_level=None, uri=not create)
            self.reader.execute("PRAGMA busy_timeout=5000")
            # Opened now, with the others, not at the first write: by then the path may name another file or none
            # (a connection would create an empty one there, and SQLite deletes the journal beside an empty
            # database: the records a renamed file's run says to rescue from it).
            self._loop_db = self._loop_writer(target, uri=not create)
        except (OSError, sqlite3.Error, StateError) as exc:
            if self._fd is not None:
                os.close(self._fd)
            if isinstance(exc, StateError):
                raise
            raise StateError(
                f"cannot open the state file {path}: {exc}; check the path, its permissions, free disk space, "
                "and that the disk is not read-only"
            ) from None

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION, one transaction a step; refuse a newer file untouched."""
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            self.db.close()
            raise StateError(
                f"the state file {self.path} has schema version {version}, written by a newer snapbatch (this one "
                f"knows versions up to {SCHEMA_VERSION}); upgrade snapbatch to use it, and do not open it with this "
                "version again"
            )
        if version == SCHEMA_VERSION and version > 0:
            return
        self.db.executescript(_SCHEMA)  # version 0's tables (idempotent), on a new or a first-release file
        for target in range(version + 1, SCHEMA_VERSION + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                # another process may have upgraded the file while this one waited for the write lock
                if int(self.db.execute("PRAGMA user_version").fetchone()[0]) < target:
                    for statement in MIGRATIONS[target - 1]:
                        self.db.execute(statement)
                    self.db.execute(f"PRAGMA user_version = {target}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    # -- locking --------------------------------------------------------------------------------------

    def lock(self, started: float) -> None:
        """Take the run lock, or raise LockedError naming the holder. A dead holder's lock is free.

        The lock is an flock on the open database file, so every path to it meets it; the lease written into
        the database then names this run, and a lease of a run still alive refuses the lock even where flock
        would not (a file system that does not share flocks between hosts)."""
        assert self._fd is not None
        deadline = time.monotonic() + _LOCK_RETRY_S
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                lease = self.lease()
                if (lease is not None and _alive(lease, self.clock())) or time.monotonic() > deadline:
                    raise self._locked_error(lease) from None
                time.sleep(0.05)  # held for a moment only: `status` probing whether a run is alive
        self._locked = True
        lease = self.lease()
        if lease is not None and _alive(lease, self.clock()):
            self.unlock()
            raise self._locked_error(lease)
        self._lease_token = secrets.token_hex(8)
        lease = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": started,
            "renewed": self.clock(),
            "token": self._lease_token,
        }
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('lease', ?)", (json.dumps(lease),))

    @property
    def locked(self) -> bool:
        """Whether this State holds the run lock."""
        return self._locked

    def renew(self) -> None:
        """Say this run is still alive (its lease's time), and check that the file is still the one open."""
        self.check_identity()
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'lease'").fetchone()
            lease = _parse_lease(row[0] if row else None)
            if lease is None or lease.get("token") != self._lease_token:
                raise StateError(
                    f"the run lease in {self.path} was taken over by another process; stopping so that two runs "
                    "never send the same batch"
                )
            lease["renewed"] = self.clock()
            db.execute("UPDATE meta SET value = ? WHERE name = 'lease'", (json.dumps(lease),))
        # Bring the database file up to the journal every renewal: SQLite refuses to checkpoint a file renamed
        # under it, so otherwise a rename strands every record in the journal beside the old name, and a run
        # given the new name would resend them. PASSIVE never waits for the reader.
        try:
            with self._lock:
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise StateError(
                f"cannot write the state file {self.path}: {exc}; check free disk space and permissions"
            ) from None

    def unlock(self) -> None:
        if self._fd is not None and self._locked:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._locked = False

    def _locked_error(self, lease: dict[str, Any] | None) -> LockedError:
        holder = lease or {}
        try:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
        except (OverflowError, ValueError, OSError, TypeError):
            since = "?"
        return LockedError(
            f"another run holds {self.path} (pid {holder.get('pid', '?')} on {echo(holder.get('host', '?'))[1:-1]}, "
            f"started {since}); wait for it to finish, or check it with `snapbatch status`",
            holder,
        )

    def lease(self) -> dict[str, Any] | None:
        """The run lease recorded in the database (a holder's pid, host, start and last renewal), or None."""
        return _parse_lease(self.meta("lease"))

    def holder(self) -> dict[str, Any] | None:
        """Who holds the run lock now, or None: the lease, if the database file is locked by its run."""
        lease = self.lease()
        if lease is None or self._fd is None:
            return None
        if self._locked:
            return lease
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lease
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        # unlocked: no run is alive here; a lease of another host's run still renewed says otherwise
        return lease if lease.get("host") != socket.gethostname() and _alive(lease, self.clock()) else None

    def vanished(self) -> str | None:
        """What happened to the file at our path if it is no longer the database this State has open
        (deleted, renamed away, replaced), else None."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            moved = self._moved_to()
            return f"was moved to {moved}" if moved else "was deleted (or moved away)"
        except OSError as exc:
            return f"can no longer be checked ({exc.strerror or exc})"
        if (now.st_dev, now.st_ino) != self.identity:
            return "was replaced by another file"
        # same file, but emptied or written over in place: the journal's pages would land in a wreck
        if self._fd is not None and os.pread(self._fd, 16, 0) != b"SQLite format 3\x00":
            return "was truncated or overwritten"
        return None

    def _moved_to(self) -> Path | None:
        """Where the open database file is now, if it was renamed rather than deleted (Linux's /proc knows)."""
        if self._fd is None:
            return None
        try:
            where = os.readlink(f"/proc/self/fd/{self._fd}")
        except OSError:
            return None
        return None if where.endswith(" (deleted)") else Path(where)

    def check_identity(self) -> None:
        """StateError when the file at our path is not the database open here: writing on would record the
        batch in a file nobody will ever read again."""
        what = self.vanished()
        if what is not None and what.startswith("was moved to"):
            raise StateError(
                f"the state file {self.path} {what} while this run was using it; stopped sending. Its last "
                f"records are in {self.path}-wal beside the old name: move the file back to {self.path} before "
                "any other run (under another name it lacks them, and they would be sent again)"
            )
        if what is not None:
            raise StateError(
                f"the state file {self.path} {what} while this run was using it; stopped sending so that no "
                "JobId is recorded only in a lost file. Requests sent since are in doubt; restore the file or "
                "start again (a new state file resends everything)"
            )

    def check_batch(self, batch: str) -> None:
        """StateError when the file records another batch: its counts and rows are not this manifest's."""
        stored = self.meta("batch")
        if stored is not None and stored != batch:
            raise StateError(f"{self.path} belongs to batch {echo(stored)}, not {echo(batch)}; give another --state")

    def close(self) -> None:
        if self._lease_token is not None:
            try:  # the lease goes with the lock; a file gone or read-only keeps a lease that is dead anyway
                with self._tx() as db:
                    db.execute(
                        "DELETE FROM meta WHERE name = 'lease' AND json_extract(value, '$.token') = ?",
                        (self._lease_token,),
                    )
            except StateError:
                pass
            self._lease_token = None
        with self._read_lock:
            self.reader.close()
        with self._lock:
            if self._loop_db is not None:
                self._loop_db.close()
                self._loop_db = None
            self.db.close()
            self.unlock()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- writing --------------------------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """The one write path into the file, for every table (the listings' too): one IMMEDIATE transaction,
        refused with StateError when the file was replaced under a run holding the lock."""
        return self._tx()

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read on the reader's connection (it never waits for the writer)."""
        try:
            with self._read_lock:
                return self.reader.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc}; check that it is intact") from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._write_error(exc) from None
            with self._begun() as db:
                yield db

    @contextmanager
    def _begun(self, db: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """The rest of a write transaction begun under ``_lock`` (on ``db``, default the writer): committed, or
        rolled back on any error."""
        db = db or self.db
        try:
            try:
                yield db
                if self._locked:
                    self.check_identity()
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._write_error(exc) from None

    def _write_error(self, exc: sqlite3.Error) -> StateError:
        return StateError(
            f"cannot write the state file {self.path}: {exc}; check free disk space and "
            "permissions (nothing was lost: the last committed state is intact)"
        )

    def meta(self, name: str) -> str | None:
        try:
            with self._read_lock:
                row = self.reader.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc}; check that it is intact") from None
        return None if row is None else str(row[0])

    def recover(self) -> int:
        """Whatever a killed run left in flight becomes in_doubt; returns how many."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE requests SET status = 'in_doubt', updated_at = ? WHERE status = 'sending'", (self.clock(),)
            )
            return cur.rowcount

    def needs_ingest(self, fingerprint: str) -> bool:
        return self.meta("fingerprint") != fingerprint

    def ingest(
        self, requests: Iterable[Request], fingerprint: str, batch: str, abandon: threading.Event | None = None
    ) -> tuple[int, int]:
        """Add the manifest's requests; existing keys keep their record. Returns (requests in the manifest,
        new ones). Commits every few thousand rows on a connection of its own, so a run can send what is
        already in while the rest comes in; the fingerprint is stored last, so an interrupted ingest is
        redone next time."""
        try:
            db = sqlite3.connect(self.path.resolve(), isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the state file {self.path}: {exc}") from None
        try:
            return self._ingest(db, requests, fingerprint, batch, abandon or threading.Event())
        except sqlite3.Error as exc:
            raise StateError(
                f"cannot write the state file {self.path}: {exc}; check free disk space and "
                "permissions (what was committed is intact)"
            ) from None
        finally:
            db.close()

    def _ingest(
        self,
        db: sqlite3.Connection,
        requests: Iterable[Request],
        fingerprint: str,
        batch: str,
        abandon: threading.Event,
    ) -> tuple[int, int]:
        self.check_batch(batch)
        if self._locked:
            self.check_identity()
        now = self.clock()
        row = db.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()
        generation = int(row[0]) + 1 if row else 1
        seq, before = db.execute("SELECT COALESCE(MAX(seq), 0), COUNT(*) FROM requests").fetchone()
        db.execute("BEGIN IMMEDIATE")
        for name, value in (("generation", str(generation)), ("batch", batch)):
            db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, value))
        db.execute("COMMIT")
        variants: dict[str, int] = {}
        total = 0
        rows: list[tuple[Any, ...]] = []
        for request in requests:
            total += 1
            text = json.dumps(
                {k: v for k, v in request.params.items() if k != request.id_kind},
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            )
            variant = variants.get(text)
            if variant is None:
                db.execute("INSERT OR IGNORE INTO variants(params) VALUES (?)", (text,))
                variant = db.execute("SELECT id FROM variants WHERE params = ?", (text,)).fetchone()[0]
                variants[text] = variant
            seq += 1
            rows.append(
                (
                    request.key,
                    seq,
                    request.job,
                    request.template,
                    request.id_kind,
                    request.video,
                    variant,
                    generation,
                    now,
                    now,
                )
            )
            if len(rows) >= 5000:
                if self._locked:
                    self.check_identity()
                self._insert(db, rows)
                rows = []
                if abandon.is_set():  # the run is over; the fingerprint stays unset, so the next run redoes this
                    return total, 0
        self._insert(db, rows)
        new = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] - before
        db.execute("BEGIN IMMEDIATE")
        for name, value in (("fingerprint", fingerprint), ("manifest_requests", str(total))):
            db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, value))
        db.execute("COMMIT")
        return total, new

    @staticmethod
    def _insert(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO requests(key, seq, job, template, id_kind, video, variant, generation, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET generation = excluded.generation",
            rows,
        )
        db.execute("COMMIT")

    _APPLY_SQL: ClassVar[dict[str, str]] = {
        "sending": "UPDATE requests SET status = 'sending', attempts = attempts + 1, updated_at = ? WHERE key = ?",
        # a new job: whatever was learnt about an earlier one of this request no longer applies
        "submitted": "UPDATE requests SET status = 'submitted', job_id = ?, request_id = ?, error_code = NULL, "
        "error_message = NULL, submitted_at = ?, updated_at = ?, completion = NULL, completed_at = NULL, "
        "completion_code = NULL, completion_message = NULL, snapshots = NULL, checked_at = NULL WHERE key = ?",
        # a request that a SnapshotComplete event proved submitted while its call was in flight stays so
        "unsend": "UPDATE requests SET status = ?, attempts = attempts - 1, updated_at = ? "
        "WHERE key = ? AND status != 'submitted'",
        "other": "UPDATE requests SET status = ?, request_id = ?, error_code = ?, error_message = ?, updated_at = ? "
        "WHERE key = ? AND status != 'submitted'",
        # attempts by second and outcome kind (schema 3), for the report's charts
        "tally": "INSERT INTO attempt_seconds(second, kind, calls) VALUES (?, ?, ?) "
        "ON CONFLICT(second, kind) DO UPDATE SET calls = calls + excluded.calls",
    }

    def apply(self, changes: Iterable[Change]) -> None:
        """Write a group of changes, in order, in one transaction."""
        runs = self._runs(changes)
        with self._tx() as db:
            for kind, rows in runs:
                db.executemany(self._APPLY_SQL[kind], rows)

    LOOP_WRITES_PER_CHECKPOINT = 100

    def apply_at_once(self, changes: Iterable[Change]) -> bool:
        """``apply``, if that needs no waiting for another write (this process's, as the lease's renewal, or
        another connection's, as the ingest's); False, with nothing written, when it would. The runner's
        event loop writes here, never blocking on a lock, and leaves what would wait to a thread."""
        runs = self._runs(changes)
        if self._loop_writes >= self.LOOP_WRITES_PER_CHECKPOINT:
            self._loop_writes = 0  # this one goes to a thread, where the commit checkpoints as SQLite does by default
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            db = self._loop_db
            if db is None:  # closed: apply says so
                return False
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:  # busy (or broken: apply, in its thread, says which)
                if db.in_transaction:
                    db.execute("ROLLBACK")
                return False
            with self._begun(db) as db:
                for kind, rows in runs:
                    db.executemany(self._APPLY_SQL[kind], rows)
            self._loop_writes += 1
            return True
        finally:
            self._lock.release()

    @staticmethod
    def _loop_writer(target: str, *, uri: bool) -> sqlite3.Connection:
        """The event loop's own connection, under ``_lock`` like the writer's. It never waits for a lock (busy
        timeout 0: a write that would wait goes to ``apply`` in a thread instead) and never checkpoints (a
        checkpoint copies pages into the database file and syncs it, tens of milliseconds on a slow disk, which
        would hold up every due call). The writer's commits, in threads, still checkpoint as SQLite does by
        default (past 1,000 pages of journal): ``renew`` every second, and one write in every
        LOOP_WRITES_PER_CHECKPOINT that apply_at_once leaves to a thread, so the journal stays bounded at lifted
        rates too. A connection of its own rather than the writer's with its busy timeout switched back and
        forth: two statements fewer a transaction."""
        db = sqlite3.connect(target, timeout=0, check_same_thread=False, isolation_level=None, uri=uri)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        return db

    def _runs(self, changes: Iterable[Change]) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """The changes as statements and their arguments, consecutive ones of a kind together."""
        now = self.clock()
        runs: list[tuple[str, list[tuple[Any, ...]]]] = []
        tally: dict[str, int] = {}  # the outcomes by kind, for attempt_seconds
        for change in changes:
            args: tuple[Any, ...]
            if isinstance(change, Intent):
                kind, args = "sending", (now, change.key)
            elif isinstance(change, Unsent):
                kind, args = "unsend", (change.status, now, change.key)
            elif change.outcome.kind == ACCEPTED:
                outcome = change.outcome
                kind, args = "submitted", (outcome.job_id, outcome.request_id, now, now, change.key)
            else:
                outcome = change.outcome
                status = outcome.kind.status
                kind, args = (
                    "other",
                    (status, outcome.request_id, outcome.code or outcome.kind, outcome.message, now, change.key),
                )
            if isinstance(change, Settled):
                tally[change.outcome.kind] = tally.get(change.outcome.kind, 0) + 1
            if runs and runs[-1][0] == kind:  # consecutive changes of one kind go in one executemany
                runs[-1][1].append(args)
            else:
                runs.append((kind, [args]))
        if tally:  # the outcomes by second and kind, for the report's charts, in the same transaction
            runs.append(("tally", [(int(now), str(k), n) for k, n in tally.items()]))
        return runs

    # -- reading --------------------------------------------------------------------------------------

    _SELECT = (
        "SELECT r.key, r.seq, r.job, r.template, r.id_kind, r.video, v.params, r.status, r.attempts, "
        "r.job_id, r.request_id, r.error_code, r.error_message, r.submitted_at, r.completion, r.completed_at, "
        "r.completion_code, r.completion_message, r.snapshots "
        "FROM requests r JOIN variants v ON v.id = r.variant"
    )

    def _row(self, raw: tuple[Any, ...]) -> Row:
        # the parameters exactly as sent: UserData.Extend carries the request key (see models.tagged)
        params = tagged({raw[4]: raw[5], **json.loads(raw[6])}, raw[0])
        return Row(raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], params, RequestStatus(raw[7]), *raw[8:])

    def pending(self, statuses: tuple[str, ...], after_seq: int, limit: int) -> list[Row]:
        """The next requests in manifest order whose status is one of ``statuses``, of this manifest."""
        generation = int(self.meta("generation") or 0)
        marks = ",".join("?" * len(statuses))
        with self._read_lock:
            raws = self.reader.execute(
                f"{self._SELECT} WHERE r.status IN ({marks}) AND r.seq > ? AND r.generation = ? ORDER BY r.seq LIMIT ?",
                (*statuses, after_seq, generation, limit),
            ).fetchall()
        return [self._row(raw) for raw in raws]

    def rows(self, statuses: tuple[str, ...] | None = None, *, sending_in_doubt: bool = False) -> Iterator[Row]:
        """Every request (or those with the given statuses), in manifest order, streamed in chunks. With
        ``sending_in_doubt`` (no run is alive) a 'sending' row is shown as what it is: in doubt."""
        if statuses and sending_in_doubt and "in_doubt" in statuses:
            statuses = (*statuses, RequestStatus.SENDING)
        last = -1
        while True:
            where = "r.seq > ?"
            args: list[Any] = [last]
            if statuses:
                where += f" AND r.status IN ({','.join('?' * len(statuses))})"
                args += list(statuses)
            with self._read_lock:
                raws = self.reader.execute(f"{self._SELECT} WHERE {where} ORDER BY r.seq LIMIT 2000", args).fetchall()
            if not raws:
                return
            for raw in raws:
                row = self._row(raw)
                if sending_in_doubt and row.status == RequestStatus.SENDING:
                    row = replace(row, status=RequestStatus.IN_DOUBT)
                if statuses is None or row.status in statuses:
                    yield row
            last = raws[-1][1]

    def compare(self, keys: Iterable[str]) -> dict[str, int]:
        """Counts as the next run will see them, for a manifest that names ``keys``: each status among the
        keys already recorded, new keys as pending ('new' too), recorded keys it no longer names as
        'not_in_manifest', and of those the ones the last run still had as 'dropped'."""
        generation = int(self.meta("generation") or 0)
        with self._read_lock:
            db = self.reader
            db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (key TEXT PRIMARY KEY)")
            try:
                db.execute("BEGIN")
                db.executemany("INSERT OR IGNORE INTO temp.wanted(key) VALUES (?)", ((k,) for k in keys))
                found = dict(
                    db.execute(
                        "SELECT r.status, COUNT(*) FROM temp.wanted w JOIN requests r ON r.key = w.key GROUP BY 1"
                    ).fetchall()
                )
                total = db.execute("SELECT COUNT(*) FROM temp.wanted").fetchone()[0]
                stale, dropped = db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(generation = ?), 0) FROM requests "
                    "WHERE key NOT IN (SELECT key FROM temp.wanted)",
                    (generation,),
                ).fetchone()
            finally:
                db.execute("ROLLBACK")
        result = {s.value: int(found.get(s, 0)) for s in RequestStatus}
        new = int(total) - sum(result.values())
        result["pending"] += new
        result.update(not_in_manifest=int(stale), new=new, dropped=int(dropped))
        return result

    def counts(self) -> dict[str, int]:
        generation = int(self.meta("generation") or 0)
        with self._read_lock:
            found = dict(
                self.reader.execute(
                    "SELECT status, COUNT(*) FROM requests WHERE generation = ? GROUP BY status", (generation,)
                ).fetchall()
            )
            stale = self.reader.execute("SELECT COUNT(*) FROM requests WHERE generation < ?", (generation,)).fetchone()
        result = {s.value: int(found.get(s, 0)) for s in RequestStatus}
        result["not_in_manifest"] = int(stale[0])
        return result

    def recent_errors(self, since: float, limit: int = 5) -> list[tuple[str, int]]:
        with self._read_lock:
            return [
                (str(c), int(n))
                for c, n in self.reader.execute(
                    "SELECT error_code, COUNT(*) FROM requests WHERE error_code IS NOT NULL AND updated_at >= ? "
                    "GROUP BY error_code ORDER BY COUNT(*) DESC LIMIT ?",
                    (since, limit),
                ).fetchall()
            ]

    def submitted_since(self, since: float) -> int:
        with self._read_lock:
            return int(
                self.reader.execute("SELECT COUNT(*) FROM requests WHERE submitted_at >= ?", (since,)).fetchone()[0]
            )

    def last_submitted_at(self) -> float | None:
        """When the service last accepted a request of this file (any run, any generation); None: never."""
        with self._read_lock:
            found = self.reader.execute("SELECT MAX(submitted_at) FROM requests").fetchone()[0]
        return None if found is None else float(found)

    # -- completion -----------------------------------------------------------------------------------

    def set_meta(self, values: dict[str, str]) -> None:
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", list(values.items()))

    _FINAL_SQL = (
        "UPDATE requests SET completion = ?, completed_at = ?, completion_code = ?, completion_message = ?, "
        "snapshots = COALESCE(?, snapshots), checked_at = ?, updated_at = ? "
        # a final state never changes (a redelivered event changes nothing), except that an event's snapshot
        # details may complete what a GetJobDetail answer said
        "WHERE job_id = ? AND (completion IS NULL OR completion = 'processing' "
        "OR (completion = ? AND snapshots IS NULL AND ? IS NOT NULL))"
    )
    _PROCESSING_SQL = (
        "UPDATE requests SET completion = 'processing', checked_at = ? "
        "WHERE job_id = ? AND (completion IS NULL OR completion = 'processing')"
    )
    # An event naming a request whose answer was lost: the job exists, so the request was submitted. Only a
    # request that was sent and whose record is older than the job: the event store outlives state files,
    # and a batch started afresh (its state file deleted) must not take an old job for its own.
    _RESOLVE_SQL = (
        "UPDATE requests SET status = 'submitted', job_id = ?, error_code = NULL, error_message = NULL, "
        "submitted_at = COALESCE(submitted_at, ?), updated_at = ? "
        "WHERE key = ? AND job_id IS NULL AND status IN ('in_doubt', 'sending') AND created_at <= ?"
    )
    _CLOCK_SKEW_S = 300.0  # between VOD's EventTime and this machine's clock

    def record_completions(self, items: list[Completion]) -> int:
        """Record what the service said about jobs, in one transaction; returns how many requests changed.
        A job is found by its JobId, or (when no request has that JobId yet) by the request key it carried."""
        if not items:
            return 0
        now = self.clock()
        changed = 0
        with self._tx() as db:
            for c in items:
                if c.key is not None:
                    at = c.at or now
                    changed += db.execute(
                        self._RESOLVE_SQL, (c.job_id, at, now, c.key, at + self._CLOCK_SKEW_S)
                    ).rowcount
                if c.status == PROCESSING:
                    changed += db.execute(self._PROCESSING_SQL, (now, c.job_id)).rowcount
                else:
                    changed += db.execute(
                        self._FINAL_SQL,
                        (
                            c.status,
                            c.at or now,
                            c.code,
                            c.message,
                            c.snapshots,
                            now,
                            now,
                            c.job_id,
                            c.status,
                            c.snapshots,
                        ),
                    ).rowcount
        return changed

    def checked(self, job_ids: list[str]) -> None:
        """Note that these jobs were asked about (the answer said nothing new), so a resumed poll asks
        the others first."""
        now = self.clock()
        with self._tx() as db:
            db.executemany("UPDATE requests SET checked_at = ? WHERE job_id = ?", [(now, j) for j in job_ids])

    def open_jobs(self, asked_before: float, limit: int) -> list[tuple[str, str]]:
        """(key, JobId) of submitted requests of this manifest whose job has no final state and that were
        not asked about since ``asked_before``: never-asked first, then the longest unasked."""
        generation = int(self.meta("generation") or 0)
        with self._read_lock:
            raws = self.reader.execute(
                "SELECT key, job_id FROM requests WHERE status = 'submitted' AND job_id IS NOT NULL "
                "AND (completion IS NULL OR completion = 'processing') AND generation = ? "
                "AND COALESCE(checked_at, 0) < ? ORDER BY checked_at IS NOT NULL, checked_at, seq LIMIT ?",
                (generation, asked_before, limit),
            ).fetchall()
        return [(str(k), str(j)) for k, j in raws]

    def unfinished_jobs_since(self, since: float) -> list[str]:
        """JobIds submitted since ``since`` still without a final state: the ones whose event may have been
        seen before their JobId was recorded."""
        with self._read_lock:
            return [
                str(j)
                for (j,) in self.reader.execute(
                    "SELECT job_id FROM requests WHERE status = 'submitted' AND submitted_at >= ? AND job_id IS NOT "
                    "NULL AND (completion IS NULL OR completion = 'processing')",
                    (since,),
                ).fetchall()
            ]

    def reopen_failed_jobs(self) -> int:
        """Requests whose job failed after submission become pending again, to be sent anew; the failure
        stays in error_code/error_message until the new job's answer replaces it."""
        generation = int(self.meta("generation") or 0)
        with self._tx() as db:
            return db.execute(
                "UPDATE requests SET status = 'pending', error_code = COALESCE(completion_code, 'JobFailed'), "
                "error_message = 'job ' || job_id || ' failed' || COALESCE(': ' || completion_message, ''), "
                "completion = NULL, completed_at = NULL, completion_code = NULL, completion_message = NULL, "
                "snapshots = NULL, checked_at = NULL, updated_at = ? "
                "WHERE status = 'submitted' AND completion = 'fail' AND generation = ?",
                (self.clock(), generation),
            ).rowcount

    def completion_counts(self) -> dict[str, Any]:
        """Submitted requests of this manifest by what became of their job, the latest completion time and
        the most common failure codes."""
        generation = int(self.meta("generation") or 0)
        with self._read_lock:
            found = dict(
                self.reader.execute(
                    "SELECT COALESCE(completion, 'unknown'), COUNT(*) FROM requests WHERE status = 'submitted' "
                    "AND generation = ? GROUP BY completion",
                    (generation,),
                ).fetchall()
            )
            latest = self.reader.execute(
                "SELECT MAX(completed_at) FROM requests WHERE generation = ? AND completion IN ('success', 'fail')",
                (generation,),
            ).fetchone()[0]
            codes = self.reader.execute(
                "SELECT COALESCE(completion_code, '?'), COUNT(*) FROM requests WHERE status = 'submitted' AND "
                "completion = 'fail' AND generation = ? GROUP BY completion_code ORDER BY COUNT(*) DESC LIMIT 5",
                (generation,),
            ).fetchall()
        return {
            "completed": int(found.get(SUCCESS, 0)),
            "failed": int(found.get(FAIL, 0)),
            "processing": int(found.get(PROCESSING, 0)),
            "unknown": int(found.get("unknown", 0)),
            "last_completed_at": latest,
            "failure_codes": [(str(c), int(n)) for c, n in codes],
        }


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.absolute()))


def _parse_lease(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        lease = json.loads(text)
    except ValueError:
        return {}
    return lease if isinstance(lease, dict) else {}


def _alive(lease: dict[str, Any], now: float) -> bool:
    """Whether the run that wrote ``lease`` may still be going: renewed lately and, on this host, its
    process still there (a killed run's lease is free at once, whatever its age)."""
    try:
        fresh = now - float(lease.get("renewed", 0)) < LEASE_EXPIRY_S
        pid = int(lease.get("pid", 0))
    except (TypeError, ValueError):
        return False
    if not fresh:
        return False
    if lease.get("host") != socket.gethostname():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
