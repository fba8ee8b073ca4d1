"""Stopping, whatever the rate: SIGTERM during a long limiter wait, a second Ctrl-C, a state file that
vanishes under a running batch. Each run is a real process against the emulator."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import IO

import pytest

from snapbatch.emulator import EmulatorConfig
from tests.emulated import running
from tests.test_run import ENV, _manifest
from tests.test_run_resilience import _calls_reached, _script


def _start(path: Path, url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [_script(), "run", str(path), "--endpoint", url, *args],
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _statuses(state_file: Path) -> dict[str, int]:
    with sqlite3.connect(state_file) as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall())


def _finish(proc: subprocess.Popen[str], seen: list[str]) -> str:
    """Everything the run wrote on stderr once it has exited (at most 60 s: a bound for a hang)."""
    assert proc.stderr is not None
    rest: list[str] = []
    reader = threading.Thread(target=lambda: rest.append(proc.stderr.read() if proc.stderr else ""), daemon=True)
    reader.start()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()  # never leave a run behind the test
        proc.wait()
        raise
    reader.join(60)
    proc.stderr.close()
    return "".join(seen) + "".join(rest)


def _wait_for_line(stream: IO[str], text: str, seen: list[str]) -> None:
    """Read stderr lines until one holds ``text`` (the run's own word that it got there)."""
    for line in stream:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never came:\n{''.join(seen)}")


def test_sigterm_during_a_long_limiter_wait_stops_at_once(tmp_path: Path) -> None:
    """At 0.01 calls/s the second call is 100 s away: SIGTERM while the run waits for that slot ends it with
    130 (the wait is interrupted, not sat out), nothing is left sending or in doubt, and the next request
    was never marked as being sent."""
    path = _manifest(tmp_path, 5)
    with running(EmulatorConfig(qps=1000)) as emu:
        proc = _start(path, emu.url, "--qps", "0.01", "--progress-every", "0.05")
        assert proc.stderr is not None
        seen: list[str] = []
        _wait_for_line(proc.stderr, "1/5 submitted", seen)  # the first answer is recorded: now it waits
        proc.send_signal(signal.SIGTERM)
        err = _finish(proc, seen)  # bounds a hang; the old code sat out the 100 s wait
        calls = len(emu.emulator.calls)
    assert proc.returncode == 130, err
    assert calls == 1 and "Traceback" not in err
    assert _statuses(tmp_path / ".snapbatch" / "t.sqlite3") == {"submitted": 1, "pending": 4}


def test_a_second_ctrl_c_stops_at_once_and_leaves_in_flight_calls_in_doubt(tmp_path: Path) -> None:
    """A call in flight whose answer takes 3 s: the first Ctrl-C starts the 5 s drain, the second stops at
    once (the answer, which the drain would have waited for, is not awaited), without a traceback; the
    call that was in flight is recorded in doubt, none left sending."""
    path = _manifest(tmp_path, 40)
    with running(EmulatorConfig(qps=1000, latency_ms=(3000, 3000))) as emu:
        reached = _calls_reached(emu, 1)
        proc = _start(path, emu.url, "--qps", "100")
        assert proc.stderr is not None
        seen: list[str] = []
        _wait_for_line(proc.stderr, "sending to", seen)
        assert reached.wait(30)
        proc.send_signal(signal.SIGINT)
        _wait_for_line(proc.stderr, "SIGINT: starting no new calls", seen)
        proc.send_signal(signal.SIGINT)
        err = _finish(proc, seen)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "second SIGINT" in err
    statuses = _statuses(tmp_path / ".snapbatch" / "t.sqlite3")
    assert statuses == {"in_doubt": 1, "pending": 39}


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_state_file_deleted_or_replaced_under_a_running_batch_stops_it_with_6(tmp_path: Path, how: str) -> None:
    """The state file deleted (or replaced by another) while a slow run (0.01 calls/s) waits for its next
    slot: the run notices within seconds, not at its next write, sends nothing more, exits 6 and says
    what happened."""
    path = _manifest(tmp_path, 200)
    state_file = tmp_path / ".snapbatch" / "t.sqlite3"
    with running(EmulatorConfig(qps=1000)) as emu:
        proc = _start(path, emu.url, "--qps", "0.01", "--progress-every", "0.05")
        assert proc.stderr is not None
        seen: list[str] = []
        _wait_for_line(proc.stderr, "1/200 submitted", seen)  # the next call is 100 s away
        if how == "deleted":
            for suffix in ("", "-wal", "-shm"):
                Path(str(state_file) + suffix).unlink(missing_ok=True)
        else:
            other = tmp_path / "other.sqlite3"
            sqlite3.connect(other).close()
            os.replace(other, state_file)
        err = _finish(proc, seen)  # bounds a hang: noticed by the next write, 100 s away, is too late
        calls = len(emu.emulator.calls)
    assert proc.returncode == 6, err
    expected = "was deleted" if how == "deleted" else "was replaced by another file"
    assert f"the state file {state_file} {expected}" in err and "stopped sending" in err
    assert "Traceback" not in err
    assert calls == 1
