"""The state file is the batch's identity: the lock follows the file, not the path; a vanished or foreign
file is noticed; status and report tell the truth about dead runs and changed manifests."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snapbatch.errors import LockedError, StateError
from snapbatch.models import ACCEPTED, Outcome
from snapbatch.run.state import LEASE_EXPIRY_S, Settled, State
from tests.conftest import CliRunner
from tests.emulated import running
from tests.test_run import ENV, _manifest


def _state_file(tmp_path: Path) -> Path:
    return tmp_path / ".snapbatch" / "t.sqlite3"


def _ran(cli: CliRunner, tmp_path: Path, n: int) -> Path:
    """A manifest of ``n`` videos, run once to the end against the emulator."""
    path = _manifest(tmp_path, n)
    with running() as emu:
        r = cli("run", str(path), "--endpoint", emu.url, env=ENV)
    assert r.code == 0, r.err
    return path


@pytest.mark.parametrize("how", ["symlink", "other relative path"])
def test_a_second_run_through_another_path_to_the_same_file_exits_3(cli: CliRunner, tmp_path: Path, how: str) -> None:
    """While a run holds the state, a second one reaching the same file through a symlink or a different
    relative path exits 3 naming the holder, and sends nothing."""
    path = _ran(cli, tmp_path, 3)
    real = _state_file(tmp_path)
    holder = State(real)
    holder.lock(1_700_000_000.0)
    if how == "symlink":
        other = tmp_path / "link.sqlite3"
        other.symlink_to(real)
    else:
        (tmp_path / "sub").mkdir()
        other = tmp_path / "sub" / ".." / ".snapbatch" / "." / "t.sqlite3"
    try:
        with running() as emu:
            r = cli("run", str(path), "--endpoint", emu.url, "--state", str(other), "--retry-failed", env=ENV)
            assert emu.emulator.calls == []
    finally:
        holder.close()
    assert r.code == 3, r.err
    assert f"pid {os.getpid()}" in r.err and "started 2023-11-14" in r.err
    assert not list(real.parent.glob("*.lock"))  # no lock file that could be deleted to get in


def test_a_live_lease_refuses_the_lock_even_without_the_flock(tmp_path: Path) -> None:
    """A lease in the database naming a live process on this host, renewed lately, refuses a second run
    even where the flock was free (a file system that does not share flocks); a dead process's lease, or
    one not renewed for LEASE_EXPIRY_S, does not."""
    path = tmp_path / "s.sqlite3"
    state = State(path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    now = time.time()
    host = socket.gethostname()
    for lease, refused in [
        ({"pid": os.getpid(), "host": host, "started": now, "renewed": now}, True),
        ({"pid": 1, "host": "elsewhere.example", "started": now, "renewed": now}, True),
        ({"pid": dead_pid, "host": host, "started": now, "renewed": now}, False),
        ({"pid": os.getpid(), "host": host, "started": now, "renewed": now - LEASE_EXPIRY_S - 1}, False),
        ({"pid": 1, "host": "elsewhere.example", "started": now, "renewed": now - LEASE_EXPIRY_S - 1}, False),
    ]:
        with sqlite3.connect(path) as db:
            db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('lease', ?)", (json.dumps(lease),))
        if refused:
            with pytest.raises(LockedError, match=f"pid {lease['pid']} on {lease['host']}"):
                state.lock(now)
        else:
            state.lock(now)
            assert state.lease() is not None and state.lease()["pid"] == os.getpid()  # type: ignore[index]
            state.unlock()
    state.close()


def test_a_state_file_with_a_second_hard_link_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    """A hard link gives one state file two names, and SQLite two journals for it: run, status and report
    refuse it (exit 6) rather than risk corrupting the batch's record or sharing it between two runs."""
    path = _ran(cli, tmp_path, 2)
    os.link(_state_file(tmp_path), tmp_path / "hard.sqlite3")
    with running() as emu:
        for command, *more in (("run", "--endpoint", emu.url), ("status",), ("report",)):
            r = cli(command, str(path), "--state", str(tmp_path / "hard.sqlite3"), *more, env=ENV)
            assert r.code == 6 and "has 2 hard links" in r.err, (command, r.err)
        assert emu.emulator.calls == []


def test_a_state_file_deleted_or_replaced_under_a_run_stops_its_writes(tmp_path: Path) -> None:
    """The file at the state path deleted, or replaced by another, while a run holds it: the next write
    (and every renewal of the lease) is refused with what happened, instead of recording JobIds in a file
    nobody will read."""
    for what in ("was deleted", "was replaced by another file"):
        path = tmp_path / f"{what[:3]}.sqlite3"
        state = State(path)
        state.lock(time.time())
        assert state.vanished() is None
        if what == "was deleted":
            path.unlink()
        else:
            State(tmp_path / "other.sqlite3").close()
            os.replace(tmp_path / "other.sqlite3", path)
        assert (state.vanished() or "").startswith(what)
        with pytest.raises(StateError, match=f"the state file {path} {what}.* while this run was using it"):
            state.apply([Settled("k", Outcome(ACCEPTED, job_id="J"))])
        with pytest.raises(StateError, match=what):
            state.renew()
        state.close()


def test_a_state_file_renamed_under_a_run_keeps_its_records_under_the_new_name(tmp_path: Path) -> None:
    """A state file renamed while a run holds it: the run stops naming where the file went, and the file under
    its new name already holds what the run recorded up to its last lease renewal (SQLite refuses to
    checkpoint a moved file, so records left only in the journal beside the old name would be resent)."""
    path = tmp_path / "s.sqlite3"
    state = State(path)
    state.lock(time.time())
    state.set_meta({"batch": "renamed"})
    state.renew()
    moved = tmp_path / "moved.sqlite3"
    os.rename(path, moved)
    assert state.vanished() == f"was moved to {moved}"
    with pytest.raises(StateError, match=f"{path}-wal"):
        state.renew()
    state.close()
    # the new name alone (its own journal does not exist): what a run given the new name would read
    (tmp_path / "alone.sqlite3").write_bytes(moved.read_bytes())
    db = sqlite3.connect(tmp_path / "alone.sqlite3")
    assert db.execute("SELECT value FROM meta WHERE name = 'batch'").fetchone() == ("renamed",)
    db.close()


def test_a_state_file_truncated_or_overwritten_under_a_run_stops_its_writes(tmp_path: Path) -> None:
    """The state file emptied or overwritten in place (same inode) while a run holds it: noticed like a
    deleted one, instead of going on in a journal whose database is gone."""
    for how in ("truncated", "overwritten"):
        path = tmp_path / f"{how}.sqlite3"
        state = State(path)
        state.lock(time.time())
        if how == "truncated":
            os.truncate(path, 0)
        else:
            with open(path, "r+b") as f:
                f.write(b"not a database at all")
        assert state.vanished() == "was truncated or overwritten"
        with pytest.raises(StateError, match="was truncated or overwritten"):
            state.renew()
        state.close()


def test_status_and_report_refuse_another_batchs_state(cli: CliRunner, tmp_path: Path) -> None:
    """status and report given the state of another batch exit 6, as run does, instead of showing that
    batch under this manifest's name."""
    _ran(cli, tmp_path, 3)
    other = tmp_path / "other"
    other.mkdir()
    (other / "ids.txt").write_text("video-00000\n")
    manifest = other / "m.yaml"
    manifest.write_text("version: 1\nbatch: another\njobs: [{name: a, videos: {file: ids.txt}, params: {Count: 1}}]\n")
    with running() as emu:
        for command, *more in (("status",), ("report",), ("run", "--endpoint", emu.url)):
            r = cli(command, str(manifest), "--state", str(_state_file(tmp_path)), *more, env=ENV)
            assert r.code == 6, (command, r.err)
            assert "belongs to batch 't', not 'another'" in r.err
        assert emu.emulator.calls == []


@pytest.mark.parametrize("content", [b"not a database at all, just text\n" * 100, None])
def test_status_of_a_file_that_is_no_state_file_exits_6_and_changes_nothing(
    cli: CliRunner, tmp_path: Path, content: bytes | None
) -> None:
    """status and report on a text file or a foreign SQLite database: exit 6, and the file is left as it was
    (they read; they never create tables)."""
    path = _manifest(tmp_path, 2)
    target = tmp_path / "foreign.db"
    if content is None:
        with sqlite3.connect(target) as db:
            db.execute("CREATE TABLE notes (x)")
    else:
        target.write_bytes(content)
    before = target.read_bytes()
    for command in ("status", "report"):
        r = cli(command, str(path), "--state", str(target))
        assert r.code == 6, r.err
        assert str(target) in r.err
    assert target.read_bytes() == before


def test_status_says_what_a_changed_manifest_adds_and_drops(cli: CliRunner, tmp_path: Path) -> None:
    """After the manifest changes, status counts requests as the next run will see them and says how many
    it adds and drops, instead of the last run's counts."""
    path = _ran(cli, tmp_path, 5)
    (tmp_path / "ids.txt").write_text("video-00000\nvideo-00001\nnew-video-1\n")
    doc = json.loads(cli("status", str(path), "--json").out)
    counts = doc["counts"]
    assert (counts["submitted"], counts["pending"], counts["new"], counts["dropped"]) == (2, 1, 1, 3)
    assert counts["not_in_manifest"] == 3
    text = cli("status", str(path)).out
    assert "the manifest changed since the last run: the next run adds 1 new request and drops 3" in text
    with running() as emu:
        r = cli("run", str(path), "--endpoint", emu.url, "--json", env=ENV)
    assert json.loads(r.out)["submitted"] == 1
    after = json.loads(cli("status", str(path), "--json").out)["counts"]
    assert "new" not in after and (after["submitted"], after["pending"], after["not_in_manifest"]) == (3, 0, 3)


def test_a_dead_runs_sending_rows_are_in_doubt_for_status_and_report_at_once(cli: CliRunner, tmp_path: Path) -> None:
    """Rows a killed run left 'sending' are shown in doubt by status and listed by `report --only in_doubt`
    before any new run; while a run holds the state, they are what it says: sending."""
    path = _ran(cli, tmp_path, 4)
    with sqlite3.connect(_state_file(tmp_path)) as db:  # what kill -9 leaves behind
        db.execute("UPDATE requests SET status = 'sending' WHERE video IN ('video-00001', 'video-00002')")
    counts = json.loads(cli("status", str(path), "--json").out)["counts"]
    assert (counts["sending"], counts["in_doubt"]) == (0, 2)
    assert "not running" in cli("status", str(path)).out
    rows = [
        json.loads(line)
        for line in cli("report", str(path), "--only", "in_doubt", "--format", "jsonl").out.splitlines()
    ]
    assert [(r["video"], r["status"]) for r in rows] == [("video-00001", "in_doubt"), ("video-00002", "in_doubt")]
    everything = cli("report", str(path)).out
    assert ",sending," not in everything and everything.count(",in_doubt,") == 2

    holder = State(_state_file(tmp_path))
    holder.lock(time.time())
    try:
        alive = json.loads(cli("status", str(path), "--json").out)
        listed = cli("report", str(path), "--only", "in_doubt", "--format", "jsonl").out
    finally:
        holder.close()
    assert (alive["counts"]["sending"], alive["counts"]["in_doubt"]) == (2, 0)
    assert alive["running"]["pid"] == os.getpid() and listed == ""


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_state_path_that_is_no_regular_file_exits_6_at_once(cli: CliRunner, tmp_path: Path, kind: str) -> None:
    """--state naming a FIFO or a directory: run, status and report exit 6 saying so, and nothing is sent."""
    target = tmp_path / "special"
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    path = _manifest(tmp_path, 2)
    with running() as emu:
        for command, *more in (("run", "--endpoint", emu.url), ("status",), ("report",)):
            r = cli(command, str(path), "--state", str(target), *more, env=ENV)
            assert r.code == 6 and "is not a regular file" in r.err, (command, r.err)
        assert emu.emulator.calls == []


@pytest.mark.parametrize("how", ["renamed", "deleted"])
def test_the_event_loops_first_write_after_the_file_went_touches_nothing_at_its_path(tmp_path: Path, how: str) -> None:
    """A state file renamed or deleted under a run before the event loop's first write (apply_at_once): the write
    is refused saying what happened, no empty database appears at the path, and the journal beside the old
    name (the records the renamed file's message says to rescue) is left where it was."""
    path = tmp_path / "s.sqlite3"
    state = State(path)
    state.lock(time.time())
    state.set_meta({"batch": "went"})  # a commit that is in the journal only
    journal = Path(f"{path}-wal")
    before = journal.read_bytes()
    if how == "renamed":
        os.rename(path, tmp_path / "moved.sqlite3")
    else:
        path.unlink()
    try:
        with pytest.raises(StateError, match=f"the state file {path} was (moved to|deleted)"):
            if not state.apply_at_once([Settled("k", Outcome(ACCEPTED, job_id="J"))]):
                state.apply([Settled("k", Outcome(ACCEPTED, job_id="J"))])
        assert not path.exists()
        assert journal.read_bytes()[: len(before)] == before
    finally:
        state.close()
