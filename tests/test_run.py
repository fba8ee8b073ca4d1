"""`snapbatch run` against the emulator: rate at the server, resume, faults, fatal errors, the lock."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from snapbatch.emulator import DROP_AFTER, EmulatorConfig, busiest_window, rate_at_server
from snapbatch.run.limiter import DEFAULT_MARGIN_S, MAX_MARGIN_S
from snapbatch.run.quota import HostFileStore
from snapbatch.run.state import State
from tests.conftest import ROOT, CliRunner
from tests.emulated import AK_ID, AK_SECRET, process, running

MARGIN_STEP_S = 0.01  # each throttle widens the limiter's margin by 10 ms (limiter.py, README)
ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": AK_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": AK_SECRET, "HOME": "/nonexistent"}


def _manifest(tmp_path: Path, n: int, *, qps: int = 30) -> Path:
    (tmp_path / "ids.txt").write_text("".join(f"video-{i:05d}\n" for i in range(n)))
    path = tmp_path / "m.yaml"
    path.write_text(
        f"version: 1\nbatch: t\nqps: {qps}\njobs:\n  - {{name: all, videos: {{file: ids.txt}}, params: {{Count: 1}}}}\n"
    )
    return path


@contextmanager
def watching_the_quota(cache: Path) -> Iterator[dict[int, float]]:
    """The starts runs record in the host quota files under ``cache`` while the block runs, by reservation id,
    read every few ms from a thread (a file holds about a second's starts; a read the watcher misses can only
    hide starts, never invent them, so an assertion on what it saw cannot fail for a correct limiter)."""
    seen: dict[int, float] = {}
    done = threading.Event()

    def watch() -> None:
        while True:
            last = done.is_set()
            for path in (cache / "snapbatch" / "quota").glob("*"):
                seen.update(HostFileStore.confirmed_starts(path))
            if last:
                return
            done.wait(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


def assert_the_limiter_kept_its_guarantee(starts: dict[int, float], qps: int) -> None:
    """The limiter's own guarantee, on the start times the run recorded (not on arrivals, which a loaded
    machine can bunch): never more than qps within any 1 s + the base margin. Unlike the counts at the server
    (which the emulator's own limit caps), this fails when the limiter admits too many."""
    assert starts, "the watcher saw no start in the host quota file"
    assert busiest_window(list(starts.values()), 1.0 + DEFAULT_MARGIN_S - 1e-9) <= qps


def test_example_on_the_builtin_emulator(cli: CliRunner, tmp_path: Path) -> None:
    """The README's first command: everything submitted, exit 0; a second run sends nothing and says so."""
    for name in ("jobs.example.yaml", "partner.csv", "catalog"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    first = cli("run", str(tmp_path / "jobs.example.yaml"), "--emulator", "--json")
    assert first.code == 0, first.err
    doc = json.loads(first.out)
    assert (doc["total"], doc["submitted"], doc["skipped"], doc["failed"]) == (11, 11, 0, 0)
    assert (tmp_path / ".snapbatch" / "catalog-2026-11.emulator.sqlite3").exists()
    assert not (tmp_path / ".snapbatch" / "catalog-2026-11.sqlite3").exists()
    second = cli("run", str(tmp_path / "jobs.example.yaml"), "--emulator", "--json")
    report = cli("report", str(tmp_path / "jobs.example.yaml"), "--emulator").out.splitlines()
    assert len(report) == 12 and all(",submitted," in line for line in report[1:])
    assert cli("status", str(tmp_path / "jobs.example.yaml")).code == 6  # no real run yet: says so
    assert second.code == 0
    assert (json.loads(second.out)["submitted"], json.loads(second.out)["skipped"]) == (0, 11)


def test_window_at_the_server_and_full_rate(cli: CliRunner, tmp_path: Path, _cache_home: Path) -> None:
    """90 requests at qps 30 against an emulator process enforcing 30/s: what is certain at the server:
    every request accepted once, never more than 30 accepted in any 1 s window, and every throttle (arrival
    jitter beyond the margin: a starved machine can stall a call past any margin, more than once) counted,
    resent and widening the margin by its step. (How close to 30/s it gets is measured by bench/quota.py,
    not asserted here; the limiter's guarantee is a property on an injected clock in test_limiter.) Slow by
    nature: 3 s of real pacing."""
    with process(tmp_path, "--qps", "30", "--latency-ms", "20", "80") as emu, watching_the_quota(_cache_home) as starts:
        r = cli("run", str(_manifest(tmp_path, 90)), "--endpoint", emu.url, "--json", env=ENV)
    calls = emu.calls()
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    accepted = [c for c in calls if c.get("outcome") == "accepted"]
    assert doc["submitted"] == 90 and len(accepted) == 90
    assert sorted(c["params"]["VideoId"] for c in accepted) == [f"video-{i:05d}" for i in range(90)]
    assert rate_at_server(accepted) <= 30
    assert_the_limiter_kept_its_guarantee(starts, 30)
    assert_throttles_were_resent_and_widened_the_margin(calls, doc, 90, _cache_home)


def assert_throttles_were_resent_and_widened_the_margin(
    calls: list[dict[str, Any]], summary: dict[str, Any], requests: int, cache: Path
) -> None:
    """Every call the server throttled is one the run counted and resent, and each widened the margin the run
    leaves behind by one 10 ms step up to the cap (a run this short never reaches the quiet minute that
    relaxes it)."""
    throttled = sum(1 for c in calls if str(c.get("code", "")).startswith("Throttling"))
    assert summary["throttled"] == throttled and len(calls) == requests + throttled
    (margin_file,) = (cache / "snapbatch" / "margins").iterdir()
    expected = min(MAX_MARGIN_S, DEFAULT_MARGIN_S + MARGIN_STEP_S * throttled)
    assert abs(json.loads(margin_file.read_text())["margin_s"] - expected) < 1e-6, (throttled, summary)


def test_throttling_slows_down_and_everything_gets_through(cli: CliRunner, tmp_path: Path) -> None:
    """Someone else uses the quota (10% Throttling.User): the run slows, resends and still submits all."""
    config = EmulatorConfig(qps=1000, faults={"Throttling.User": 0.1}, seed=7)
    with running(config) as emu:
        r = cli("run", str(_manifest(tmp_path, 60)), "--endpoint", emu.url, "--qps", "200", "--json", env=ENV)
        accepted = [c for c in emu.emulator.calls if c.get("outcome") == "accepted"]
    doc = json.loads(r.out)
    assert r.code == 0 and doc["submitted"] == 60 and doc["throttled"] > 0 and doc["retries"] >= doc["throttled"]
    assert len(accepted) == 60


def test_faults_lose_nothing_and_duplicate_only_lost_answers(cli: CliRunner, tmp_path: Path) -> None:
    """5xx, throttling and dropped connections (before and after a job is made) at 30% in all: every request
    ends submitted, and a video has a second job only where an answer was lost."""
    config = EmulatorConfig(
        qps=1000,
        seed=3,
        faults={"InternalError": 0.1, "ServiceUnavailable": 0.05, "drop-before": 0.05, DROP_AFTER: 0.1},
    )
    with running(config) as emu:
        r = cli("run", str(_manifest(tmp_path, 80)), "--endpoint", emu.url, "--qps", "300", "--json", env=ENV)
        calls = list(emu.emulator.calls)
    assert r.code == 0, r.err
    jobs: dict[str, int] = {}
    lost: dict[str, int] = {}
    for c in calls:
        video = c["params"]["VideoId"]
        if c.get("job_id"):
            jobs[video] = jobs.get(video, 0) + 1
        if c.get("outcome") == DROP_AFTER:
            lost[video] = lost.get(video, 0) + 1
    assert len(jobs) == 80
    assert all(count - 1 <= lost.get(video, 0) for video, count in jobs.items())


def test_wrong_secret_stops_after_one_call(cli: CliRunner, tmp_path: Path) -> None:
    """A wrong secret: exit 4 with what to check, at most 10 calls whatever --qps and --concurrency say."""
    env = {**ENV, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "wrong-secret-value"}
    with running(EmulatorConfig(qps=1000)) as emu:
        r = cli(
            "run", str(_manifest(tmp_path, 200)), "--endpoint", emu.url, "--qps", "500", "--concurrency", "100", env=env
        )
        calls = len(emu.emulator.calls)
    assert r.code == 4
    assert "SignatureDoesNotMatch" in r.err and "check the AccessKey secret" in r.err
    assert calls <= 10
    assert "wrong-secret-value" not in r.err + r.out


def test_permanent_failures_are_recorded_and_reported(cli: CliRunner, tmp_path: Path) -> None:
    """Unknown videos fail once (not retried), exit 1; report --only failed lists them with the Code."""
    known = {f"video-{i:05d}": None for i in range(0, 10, 2)}
    path = _manifest(tmp_path, 10)
    with running(EmulatorConfig(videos=known)) as emu:
        r = cli("run", str(path), "--endpoint", emu.url, "--json", env=ENV)
        assert len(emu.emulator.calls) == 10
    assert r.code == 1 and json.loads(r.out)["failed"] == 5
    report = cli("report", str(path), "--only", "failed", "--format", "jsonl")
    rows = [json.loads(line) for line in report.out.splitlines()]
    assert [row["video"] for row in rows] == [f"video-{i:05d}" for i in range(1, 10, 2)]
    assert {row["error_code"] for row in rows} == {"InvalidVideo.NotFound"}
    status = json.loads(cli("status", str(path), "--json").out)
    assert status["recent_errors"] == [{"code": "InvalidVideo.NotFound", "count": 5}]
    assert "recent errors: InvalidVideo.NotFound x5" in cli("status", str(path)).out


def test_second_run_on_a_locked_state_exits_3(cli: CliRunner, tmp_path: Path) -> None:
    """While another run holds the state, run exits 3 at once naming the holder; a dead holder's lock is free."""
    import os

    path = _manifest(tmp_path, 3)
    holder = State(tmp_path / ".snapbatch" / "t.sqlite3")
    holder.lock(1_700_000_000.0)
    with running() as emu:
        r = cli("run", str(path), "--endpoint", emu.url, env=ENV)
        assert r.code == 3
        assert f"pid {os.getpid()}" in r.err and "started 2023-11-14" in r.err
        assert emu.emulator.calls == []
        holder.close()  # the holder is gone: its lock goes with it
        assert cli("run", str(path), "--endpoint", emu.url, env=ENV).code == 0


def test_max_requests_slices_and_resumes(cli: CliRunner, tmp_path: Path) -> None:
    """--max-requests stops with exit 5 and work left; the next run continues where it stopped."""
    path = _manifest(tmp_path, 12)
    with running(EmulatorConfig(qps=1000)) as emu:
        first = cli("run", str(path), "--endpoint", emu.url, "--qps", "200", "--max-requests", "5", "--json", env=ENV)
        second = cli("run", str(path), "--endpoint", emu.url, "--qps", "200", "--json", env=ENV)
        videos = [c["params"]["VideoId"] for c in emu.emulator.calls]
    assert first.code == 5 and json.loads(first.out)["submitted"] == 5
    assert second.code == 0 and json.loads(second.out)["skipped"] == 5
    assert sorted(videos) == [f"video-{i:05d}" for i in range(12)]


def test_no_secret_in_state_or_output(cli: CliRunner, tmp_path: Path) -> None:
    """Neither the secret nor the token ever lands in the state file, stdout or stderr."""
    env = {**ENV, "ALIBABA_CLOUD_SECURITY_TOKEN": "sts-TOKEN-never-shown"}
    config = EmulatorConfig(credentials={AK_ID: (AK_SECRET, "sts-TOKEN-never-shown")})
    path = _manifest(tmp_path, 4)
    with running(config) as emu:
        r = cli("run", str(path), "--endpoint", emu.url, "--json", env=env)
    assert r.code == 0, r.err
    blobs = [r.out, r.err] + [p.read_bytes().decode("latin-1") for p in (tmp_path / ".snapbatch").iterdir()]
    for blob in blobs:
        assert AK_SECRET not in blob and "sts-TOKEN-never-shown" not in blob


@pytest.mark.parametrize("args", [["--qps", "0"], ["--concurrency", "0"], ["--in-doubt", "maybe"]])
def test_run_usage_errors(cli: CliRunner, tmp_path: Path, args: list[str]) -> None:
    """Bad flag values: exit 2 and nothing sent."""
    assert cli("run", str(_manifest(tmp_path, 1)), *args, env=ENV).code == 2
