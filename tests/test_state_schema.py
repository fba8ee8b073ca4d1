"""The state file's schema version: an older file is upgraded in place, a newer one is refused."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from snapbatch.run.state import MIGRATIONS, SCHEMA_VERSION, Completion, State
from tests.conftest import CliRunner

# Written by snapbatch as released before schema versions existed (version 0): five requests of batch
# "legacy": k..0 submitted (JobId job0), k..1 failed, k..2 in doubt, k..3 sending (a killed run), k..4 pending.
FIXTURE = Path(__file__).parent / "fixtures" / "state-v0.sqlite3"
MANIFEST = """version: 1
batch: legacy
jobs:
  - name: thumbs
    videos: [v0000]
    params: {Count: 3}
"""


def _copy(tmp_path: Path) -> Path:
    path = tmp_path / "legacy.sqlite3"
    shutil.copy(FIXTURE, path)
    return path


def _version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_fixture_is_a_version_0_file() -> None:
    """The checked-in file really is what the first release wrote: version 0, without completion columns."""
    with sqlite3.connect(FIXTURE) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
    assert "completion" not in columns and "job_id" in columns


def test_version_0_file_is_upgraded_in_place_and_keeps_every_record(tmp_path: Path) -> None:
    """Opening a first-release state file upgrades it to the current version, and every request keeps its
    status, attempts, JobId and error; the new completion fields start empty and can be written."""
    path = _copy(tmp_path)
    with sqlite3.connect(path) as db:
        before = db.execute("SELECT key, status, attempts, job_id, error_code FROM requests ORDER BY seq").fetchall()
    state = State(path)
    try:
        rows = list(state.rows())
        assert [(r.key, r.status, r.attempts, r.job_id, r.error_code) for r in rows] == before
        assert [r.status for r in rows] == ["submitted", "failed", "in_doubt", "sending", "pending"]
        assert all(r.completion is None for r in rows)
        assert state.record_completions([Completion("job0", "success", at=1764200100.0)]) == 1
        assert state.completion_counts()["completed"] == 1
    finally:
        state.close()
    assert _version(path) == SCHEMA_VERSION == len(MIGRATIONS)
    again = State(path)  # opening an up-to-date file changes nothing
    try:
        assert next(again.rows()).completion == "success"
    finally:
        again.close()


def test_upgraded_file_serves_status_and_report(tmp_path: Path, cli: CliRunner) -> None:
    """`status` and `report` on a first-release state file work and show the completion columns."""
    path = _copy(tmp_path)
    manifest = tmp_path / "legacy.yaml"
    manifest.write_text(MANIFEST)
    r = cli("status", str(manifest), "--state", str(path), "--json")
    assert r.code == 0, r.err
    r = cli("report", str(manifest), "--state", str(path))
    assert r.code == 0, r.err
    header = r.out.splitlines()[0].split(",")
    assert "completion" in header and "job_id" in header
    assert len(r.out.splitlines()) == 6


def test_newer_schema_is_refused_with_exit_6_and_left_untouched(tmp_path: Path, cli: CliRunner) -> None:
    """A state file from a newer snapbatch (a higher user_version) is refused with exit 6 and a message
    that says to upgrade snapbatch; the file is not modified."""
    path = _copy(tmp_path)
    State(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    content = path.read_bytes()
    manifest = tmp_path / "legacy.yaml"
    manifest.write_text(MANIFEST)
    for command in ("status", "report"):
        r = cli(command, str(manifest), "--state", str(path))
        assert r.code == 6
        assert f"schema version {SCHEMA_VERSION + 1}" in r.err and "upgrade snapbatch" in r.err
    assert path.read_bytes() == content


# The v0 fixture opened by snapbatch at schema version 2 (completion and listings, before attempt tallies),
# with k..0's job recorded as completed.
FIXTURE_V2 = Path(__file__).parent / "fixtures" / "state-v2.sqlite3"


def test_fixture_is_a_version_2_file() -> None:
    """The checked-in v2 file has the completion columns and listings but no attempt tallies."""
    with sqlite3.connect(FIXTURE_V2) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
    assert "listings" in tables and "attempt_seconds" not in tables


def test_version_2_file_gains_attempt_tallies_and_keeps_every_record(tmp_path: Path, cli: CliRunner) -> None:
    """Opening a v2 file upgrades it to the current version in place: every request keeps its record, the
    attempt tallies start empty (the HTML report says so instead of drawing), and new outcomes are tallied."""
    from snapbatch.models import ACCEPTED, Outcome
    from snapbatch.run.state import Intent, Settled

    path = tmp_path / "legacy.sqlite3"
    shutil.copy(FIXTURE_V2, path)
    with sqlite3.connect(path) as db:
        before = db.execute("SELECT key, status, attempts, job_id, completion FROM requests ORDER BY seq").fetchall()
    manifest = tmp_path / "legacy.yaml"
    manifest.write_text(MANIFEST)
    r = cli("report", str(manifest), "--state", str(path), "--html", str(tmp_path / "r.html"))
    assert r.code == 0, r.err
    page = (tmp_path / "r.html").read_text()
    assert "No attempts recorded yet" in page and 'data-metric="completed">1<' in page
    assert _version(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        after = db.execute("SELECT key, status, attempts, job_id, completion FROM requests ORDER BY seq").fetchall()
        assert db.execute("SELECT COUNT(*) FROM attempt_seconds").fetchone() == (0,)
    assert after == before and after[0][4] == "success"
    state = State(path, clock=lambda: 1764200200.5)
    try:
        key = before[4][0]
        state.apply([Intent(key), Settled(key, Outcome(ACCEPTED, job_id="job4"))])
    finally:
        state.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT second, kind, calls FROM attempt_seconds").fetchall() == [(1764200200, "accepted", 1)]
