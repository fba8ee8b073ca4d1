"""What a night run meets: kill -9, SIGTERM, outages, lost answers, slices, changed manifests, slow answers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from snapbatch.emulator import EmulatorConfig, rate_at_server
from snapbatch.manifest.expand import expand, fingerprint
from snapbatch.manifest.load import load_manifest
from snapbatch.run.limiter import DEFAULT_MARGIN_S, Limiter, RateWindow
from snapbatch.run.runner import RunOptions, run_batch
from snapbatch.run.state import State
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.conftest import CliRunner
from tests.emulated import AK_ID, AK_SECRET, process, running
from tests.test_run import (
    ENV,
    _manifest,
    assert_the_limiter_kept_its_guarantee,
    assert_throttles_were_resent_and_widened_the_margin,
    watching_the_quota,
)


def _calls_reached(emu: Any, count: int) -> threading.Event:
    reached = threading.Event()

    def observe(entry: dict[str, Any]) -> None:
        if len(emu.emulator.calls) >= count:
            reached.set()

    emu.emulator.observers.append(observe)
    return reached


def _script() -> str:
    return shutil.which("snapbatch") or str(Path(sys.executable).parent / "snapbatch")


def _kill_run_after(emu: Any, path: Path, tmp_path: Path, *, calls: int, qps: str) -> int:
    """Start `snapbatch run` in a process, SIGKILL it once the emulator has seen ``calls`` more calls;
    return how many requests the state then holds as in flight."""
    reached = _calls_reached(emu, len(emu.emulator.calls) + calls)
    proc = subprocess.Popen(
        [_script(), "run", str(path), "--endpoint", emu.url, "--qps", qps],
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert reached.wait(30)
    proc.kill()
    proc.wait()
    with sqlite3.connect(tmp_path / ".snapbatch" / "t.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM requests WHERE status = 'sending'").fetchone()[0])


def _jobs_per_video(calls: list[dict[str, Any]]) -> dict[str, int]:
    jobs: dict[str, int] = {}
    for c in calls:
        if c.get("job_id"):
            jobs[c["params"]["VideoId"]] = jobs.get(c["params"]["VideoId"], 0) + 1
    return jobs


def test_kill_9_mid_run_loses_nothing(cli: CliRunner, tmp_path: Path) -> None:
    """kill -9 while calls are in flight: the next run finds them in doubt, resends them, and every video
    gets its job; a video has two jobs only if its call was in flight at the kill. Slow by nature: a run in a process
    of its own (startup, imports) and 200 calls."""
    path = _manifest(tmp_path, 200)
    with running(EmulatorConfig(qps=1000, latency_ms=(30, 60))) as emu:
        in_flight = _kill_run_after(emu, path, tmp_path, calls=60, qps="200")
        r = cli("run", str(path), "--endpoint", emu.url, "--qps", "200", "--json", env=ENV)
        calls = list(emu.emulator.calls)
    assert r.code == 0, r.err
    assert in_flight >= 1  # the 60th call's answer takes at least 30 ms: it was in flight at the kill
    assert f"{in_flight} requests were in flight when the last run stopped" in r.err
    jobs = _jobs_per_video(calls)
    assert len(jobs) == 200
    assert sum(n - 1 for n in jobs.values()) <= in_flight


def test_sigterm_stops_cleanly_with_130(cli: CliRunner, tmp_path: Path) -> None:
    """SIGTERM: no new calls, those in flight finish and are recorded, exit 130; the next run completes. Slow by
    nature: a run in a process of its own, then the rest of 150 calls."""
    path = _manifest(tmp_path, 150)  # 1.5 s of sending at 100/s: SIGTERM after 20 calls leaves most unsent
    with running(EmulatorConfig(qps=1000, latency_ms=(20, 40))) as emu:
        reached = _calls_reached(emu, 20)
        proc = subprocess.Popen(
            [_script(), "run", str(path), "--endpoint", emu.url, "--qps", "100"],
            env={**os.environ, **ENV},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert reached.wait(30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        seen = len(emu.emulator.calls)
        with sqlite3.connect(tmp_path / ".snapbatch" / "t.sqlite3") as db:
            statuses = dict(db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall())
        r = cli("run", str(path), "--endpoint", emu.url, "--qps", "300", "--json", env=ENV)
        jobs = _jobs_per_video(emu.emulator.calls)
    assert proc.returncode == 130, err
    assert "SIGTERM: starting no new calls" in err
    assert "sending" not in statuses and statuses["submitted"] == seen < 150
    assert r.code == 0 and len(jobs) == 150 and set(jobs.values()) == {1}


def test_outage_ends_the_run_cleanly(cli: CliRunner, tmp_path: Path) -> None:
    """Every answer a 5xx: the run stops after a bounded number of calls with exit 5, resumable, and says
    what the last error was."""
    path = _manifest(tmp_path, 500)
    with running(EmulatorConfig(qps=1000, faults={"ServiceUnavailable": 1.0})) as emu:
        r = cli("run", str(path), "--endpoint", emu.url, "--qps", "500", "--json", env=ENV)
        calls = len(emu.emulator.calls)
    assert r.code == 5, r.err
    assert "the service looks down" in r.err and "(last error: ServiceUnavailable: Injected fault" in r.err, r.err
    assert calls < 120
    assert json.loads(r.out)["pending"] == 500


def test_unreachable_endpoint_stops_after_a_few_tries_saying_why(cli: CliRunner, tmp_path: Path) -> None:
    """Nothing listening at the endpoint: the run gives up after a handful of calls, not after the 50 in a
    row that mean an outage of a service that did answer, and the log says what the connection error was."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free again once closed: nothing listens there
    r = cli("run", str(_manifest(tmp_path, 40)), "--endpoint", f"http://127.0.0.1:{port}", "--json", env=ENV)
    summary = json.loads(r.out)
    assert r.code == 5, r.err
    assert "the endpoint never answered" in r.err and f"cannot connect to 127.0.0.1:{port}" in r.err, r.err
    assert summary["pending"] == 40 and summary["stopped"] == "unreachable"
    assert summary["retries"] < 5  # five calls in all, the first retries among them


def test_retry_budget_bounds_the_calls() -> None:
    """With a budget of 20 retries and a service that always fails, at most requests + 20 calls are made."""

    async def go(url: str, state: State) -> tuple[str | None, int]:
        async with VodClient(url, Credentials(AK_ID, AK_SECRET)) as client:
            options = RunOptions(retry_budget=20, backoff_base_s=0.001, backoff_cap_s=0.01, outage_after=10_000)
            result = await run_batch(state, client, Limiter(RateWindow(1000)), options)
            return result.stop_reason, result.calls

    with running(EmulatorConfig(qps=10_000, faults={"InternalError": 1.0})) as emu, _state_for(emu, 10) as state:
        reason, calls = anyio.run(go, emu.url, state)
    assert reason == "retry-budget"
    assert calls <= 10 + 20


def test_retry_budget_lets_a_flaky_service_finish_a_batch_still_being_ingested(tmp_path: Path) -> None:
    """A fresh batch starts sending while its manifest is still going into the state, against a service
    failing 30% of calls (about 170 retries for 400 requests, over the base budget of 100, which is also
    what 400 requests would get). Every answered request refills the budget, so the run finishes instead of
    spending a budget sized for the empty state at the start. (Some 570 calls, about 2 s.)"""
    manifest = load_manifest(_manifest(tmp_path, 400), {})
    state = State(tmp_path / "s.sqlite3")
    ingested = threading.Event()

    async def go(url: str) -> tuple[str | None, int, int]:
        async with VodClient(url, Credentials(AK_ID, AK_SECRET)) as client, anyio.create_task_group() as tg:
            # 20 attempts a request: 8 would leave one request in a few pending by plain bad luck (0.3 ** 8)
            options = RunOptions(backoff_base_s=0.001, backoff_cap_s=0.01, max_attempts=20)

            async def ingest() -> None:
                await anyio.to_thread.run_sync(state.ingest, expand(manifest), fingerprint(manifest), manifest.batch)
                ingested.set()

            tg.start_soon(ingest)
            result = await run_batch(
                state, client, Limiter(RateWindow(5000)), options, more_coming=lambda: not ingested.is_set()
            )
        return result.stop_reason, result.retries, result.submitted

    try:
        with running(EmulatorConfig(qps=100_000, faults={"InternalError": 0.3}, seed=5)) as emu:
            reason, retries, submitted = anyio.run(go, emu.url)
    finally:
        state.close()
    assert (reason, submitted) == (None, 400), (reason, retries, submitted)
    assert retries > 100  # more than the base budget (a tenth of the work, at least 100): only refills allow that


def test_requests_left_after_the_attempt_cap_are_counted_and_kept() -> None:
    """A request that gets no definite answer in max_attempts calls stays pending with its attempts and
    last error recorded, and the run says how many it gave up on. The next run gives each the full
    max_attempts again; the recorded attempts keep counting."""

    async def go(url: str, state: State) -> tuple[str | None, int, int]:
        async with VodClient(url, Credentials(AK_ID, AK_SECRET)) as client:
            options = RunOptions(max_attempts=3, backoff_base_s=0.001, backoff_cap_s=0.01, outage_after=10_000)
            result = await run_batch(state, client, Limiter(RateWindow(1000)), options)
            return result.stop_reason, result.gave_up, result.calls

    with running(EmulatorConfig(qps=10_000, faults={"InternalError": 1.0})) as emu, _state_for(emu, 4) as state:
        first = anyio.run(go, emu.url, state)
        after_first = state.pending(("pending",), 0, 10)
        second = anyio.run(go, emu.url, state)
        after_second = state.pending(("pending",), 0, 10)
    assert first == second == (None, 4, 12)
    assert [(r.attempts, r.error_code) for r in after_first] == [(3, "InternalError")] * 4
    assert [r.attempts for r in after_second] == [6] * 4


class _state_for:
    def __init__(self, emu: Any, n: int) -> None:
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.path = _manifest(Path(self.tmp.name), n)

    def __enter__(self) -> State:
        manifest = load_manifest(self.path, {})
        self.state = State(Path(self.tmp.name) / "s.sqlite3")
        self.state.ingest(expand(manifest), fingerprint(manifest), manifest.batch)
        return self.state

    def __exit__(self, *exc: object) -> None:
        self.state.close()
        self.tmp.cleanup()


def _set_status(tmp_path: Path, status: str, videos: list[str]) -> None:
    with sqlite3.connect(tmp_path / ".snapbatch" / "t.sqlite3") as db:
        db.executemany("UPDATE requests SET status = ? WHERE video = ?", [(status, v) for v in videos])


def test_in_doubt_resend_or_skip(cli: CliRunner, tmp_path: Path) -> None:
    """In-doubt requests: --in-doubt skip leaves them (exit 1), the default sends them again."""
    path = _manifest(tmp_path, 6)
    with running() as emu:
        assert cli("run", str(path), "--endpoint", emu.url, env=ENV).code == 0
        _set_status(tmp_path, "in_doubt", ["video-00001", "video-00004"])
        skip = cli("run", str(path), "--endpoint", emu.url, "--in-doubt", "skip", "--json", env=ENV)
        calls_after_skip = len(emu.emulator.calls)
        resend = cli("run", str(path), "--endpoint", emu.url, "--json", env=ENV)
        resent = [c["params"]["VideoId"] for c in emu.emulator.calls[calls_after_skip:]]
    assert skip.code == 1 and json.loads(skip.out)["in_doubt"] == 2 and calls_after_skip == 6
    assert resend.code == 0 and sorted(resent) == ["video-00001", "video-00004"]


def test_retry_failed(cli: CliRunner, tmp_path: Path) -> None:
    """Failed requests are not sent again, unless --retry-failed."""
    path = _manifest(tmp_path, 4)
    with running(EmulatorConfig(videos={"video-00000": None, "video-00001": None})) as emu:
        assert cli("run", str(path), "--endpoint", emu.url, env=ENV).code == 1
        assert cli("run", str(path), "--endpoint", emu.url, env=ENV).code == 1
        assert len(emu.emulator.calls) == 4
        emu.emulator.config.videos = None  # the videos have been uploaded meanwhile
        r = cli("run", str(path), "--endpoint", emu.url, "--retry-failed", "--json", env=ENV)
    assert r.code == 0 and json.loads(r.out)["submitted"] == 2


def test_max_duration_slices(cli: CliRunner, tmp_path: Path) -> None:
    """--max-duration stops starting calls after that long: exit 5, the rest left for the next slice."""
    path = _manifest(tmp_path, 100)
    with running() as emu:
        r = cli("run", str(path), "--endpoint", emu.url, "--qps", "10", "--max-duration", "0.5", "--json", env=ENV)
    doc = json.loads(r.out)
    assert r.code == 5 and 1 <= doc["submitted"] <= 7 and doc["pending"] == 100 - doc["submitted"]
    assert "--max-duration reached" in r.err


def test_changed_manifest_keeps_old_records_and_status_counts_them(cli: CliRunner, tmp_path: Path) -> None:
    """A changed manifest adds its new requests; status says how many recorded ones it no longer names."""
    path = _manifest(tmp_path, 5)
    with running() as emu:
        assert cli("run", str(path), "--endpoint", emu.url, env=ENV).code == 0
        (tmp_path / "ids.txt").write_text("video-00000\nvideo-00001\nnew-video-1\n")
        r = cli("run", str(path), "--endpoint", emu.url, "--json", env=ENV)
    doc = json.loads(r.out)
    assert (doc["submitted"], doc["skipped"], doc["total"]) == (1, 2, 3)
    status = cli("status", str(path), "--json")
    counts = json.loads(status.out)["counts"]
    assert counts["submitted"] == 3 and counts["not_in_manifest"] == 3
    text = cli("status", str(path)).out
    assert "3 recorded requests are no longer in the manifest" in text and "not running" in text


def test_report_csv(cli: CliRunner, tmp_path: Path) -> None:
    """report: a CSV header and one row per request with the JobId the service gave."""
    path = _manifest(tmp_path, 3)
    with running() as emu:
        cli("run", str(path), "--endpoint", emu.url, env=ENV)
        jobs = {c["params"]["VideoId"]: c["job_id"] for c in emu.emulator.calls}
    lines = cli("report", str(path)).out.splitlines()
    assert lines[0] == (
        "job,key,id_kind,video,status,job_id,request_id,error_code,error_message,attempts,submitted_at,"
        "completion,completed_at,completion_code,completion_message,snapshot_count,snapshot_url"
    )
    rows = [line.split(",") for line in lines[1:]]
    assert [(r[3], r[4], r[5], r[9]) for r in rows] == [(v, "submitted", jobs[v], "1") for v in sorted(jobs)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[10]) for r in rows)
    assert all(r[11] == "unknown" for r in rows)  # no event or GetJobDetail answer yet


def test_slow_answers_still_use_the_quota(cli: CliRunner, tmp_path: Path, _cache_home: Path) -> None:
    """Answers taking 0.8-1.5 s: the default concurrency leaves room for 2.5 s of calls in flight (so even
    2 s answers cannot starve the rate); at the server what is certain holds: nothing is lost (each request
    accepted exactly once), no 1 s window holds more than 30 accepted calls, and every throttle (arrival
    jitter beyond the margin, which a starved machine can produce any number of times) was resent and widened
    the margin by its step. The rate achieved is bench/quota.py's to measure. Slow by nature: 4 s of sending
    at 30/s and answers of up to 1.5 s."""
    with (
        process(tmp_path, "--qps", "30", "--latency-ms", "800", "1500") as emu,
        watching_the_quota(_cache_home) as starts,
    ):
        r = cli("run", str(_manifest(tmp_path, 120)), "--endpoint", emu.url, "--json", env=ENV)
    calls = emu.calls()
    accepted = [c for c in calls if c.get("outcome") == "accepted"]
    assert r.code == 0 and json.loads(r.out)["submitted"] == 120, r.err
    in_flight = re.search(r"at most 30 calls/s, (\d+) in flight", r.err)
    assert in_flight and int(in_flight.group(1)) >= 30 * 2.5, r.err
    assert sorted(c["params"]["VideoId"] for c in accepted) == [f"video-{i:05d}" for i in range(120)]
    assert rate_at_server(accepted) <= 30
    assert_the_limiter_kept_its_guarantee(starts, 30)
    assert_throttles_were_resent_and_widened_the_margin(calls, json.loads(r.out), 120, _cache_home)


def test_a_throttled_run_leaves_its_margin_for_the_next(cli: CliRunner, tmp_path: Path, _cache_home: Path) -> None:
    """Throttles widen the margin; the run keeps it under the cache directory, in a file named by a hash
    (neither the key id nor the secret in its name or content), and the next run on that endpoint and key
    starts from it and says so. Slow by nature: the throttled calls wait for the emulator's 4/s window."""
    with running(EmulatorConfig(qps=4)) as emu:
        # 6 calls paced at 10/s arrive within about 0.5 s: the emulator's 4/s throttles at least one
        first = cli("run", str(_manifest(tmp_path, 6)), "--endpoint", emu.url, "--qps", "10", env=ENV)
        files = list((_cache_home / "snapbatch" / "margins").iterdir())
        assert len(files) == 1, first.err
        content = files[0].read_text()
        assert AK_ID not in files[0].name + content and AK_SECRET not in files[0].name + content
        assert json.loads(content)["margin_s"] >= DEFAULT_MARGIN_S + 0.01 - 1e-9
        (tmp_path / "ids.txt").write_text("".join(f"video-{i:05d}\n" for i in range(6, 8)))
        second = cli("run", str(tmp_path / "m.yaml"), "--endpoint", emu.url, "--qps", "10", env=ENV)
    assert "margin the last run on this key learned from throttles" in second.err, second.err
    assert "learned from throttles" not in first.err


def test_progress_lines_without_a_terminal(cli: CliRunner, tmp_path: Path) -> None:
    """Without a terminal, plain progress log lines on stderr at the chosen interval; errors
    (5xx, lost answers) show with the latest one's code, so a stuck night run says why. Slow by nature: 45 requests
    at the real 30/s, so that three 0.3 s progress lines fit."""
    with running(EmulatorConfig(faults={"InternalError": 0.3}, seed=4)) as emu:
        r = cli("run", str(_manifest(tmp_path, 45)), "--endpoint", emu.url, "--progress-every", "0.3", env=ENV)
    lines = [line for line in r.err.splitlines() if re.search(r"\d+/45 submitted, [\d.]+/s, ETA", line)]
    assert r.code == 0 and len(lines) >= 3, r.err
    assert any(re.search(r"errors \d+ \(latest InternalError\)", line) for line in lines), r.err


def test_concurrency_caps_calls_in_flight(cli: CliRunner, tmp_path: Path) -> None:
    """--concurrency 2 with answers taking 300 ms: the server never sees a third call before 300 ms pass."""
    with running(EmulatorConfig(qps=1000, latency_ms=(300, 300))) as emu:
        r = cli(
            "run", str(_manifest(tmp_path, 8)), "--endpoint", emu.url, "--qps", "100", "--concurrency", "2", env=ENV
        )
        times = [c["mono"] for c in emu.emulator.calls]
    assert r.code == 0
    # after the single probe call, calls go in pairs; any three consecutive arrivals span an answer time
    assert all(c - a >= 0.29 for a, c in zip(times[1:], times[3:], strict=False))


def test_unusable_state_file_exits_6(cli: CliRunner, tmp_path: Path) -> None:
    """A state path that cannot be created: exit 6 with the path and what to check, nothing sent."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    with running() as emu:
        r = cli(
            "run", str(_manifest(tmp_path, 2)), "--endpoint", emu.url, "--state", str(blocker / "s.sqlite3"), env=ENV
        )
        assert emu.emulator.calls == []
    assert r.code == 6 and "cannot open the state file" in r.err and str(blocker) in r.err


def test_status_of_a_running_batch(cli: CliRunner, tmp_path: Path) -> None:
    """While a run is going, status names its pid and shows its rate (measured since it started, not
    diluted over a minute it has not run yet) and a matching ETA; after it, 'not running'. Slow by nature: a run in a
    process of its own, asked while it sends at 40/s."""
    path = _manifest(tmp_path, 400)
    with running(EmulatorConfig(qps=1000)) as emu:
        reached = _calls_reached(emu, 30)
        proc = subprocess.Popen(
            [_script(), "run", str(path), "--endpoint", emu.url, "--qps", "40"],
            env={**os.environ, **ENV},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert reached.wait(30)
            doc = json.loads(cli("status", str(path), "--json").out)
            text = cli("status", str(path)).out
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert doc["running"]["pid"] == proc.pid
    # 400 requests at 40/s: a rate diluted over 60 s would be under 1/s with an ETA of minutes
    assert doc["rate_per_s"] > 10 and 0 < doc["eta_s"] < 40 and doc["rate_window_s"] < 60, doc
    assert doc["counts"]["submitted"] >= 1
    assert f"running: pid {proc.pid}" in text and "ETA" in text
    assert "not running" in cli("status", str(path)).out


def test_progress_line_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal, one live progress line rewritten in place (carriage returns, no new lines). 40
    requests at 30/s take over 1.3 s, room for three lines 0.3 s apart. Slow by nature: that real pacing, and a run
    in a process of its own on a pty."""
    import pty

    path = _manifest(tmp_path, 40)
    with running() as emu:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            [_script(), "run", str(path), "--endpoint", emu.url, "--progress-every", "0.3"],
            env={**os.environ, **ENV},
            stdout=subprocess.DEVNULL,
            stderr=follower,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=30)
        os.close(leader)
    screen = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert len(re.findall(r"\r\d+/40 submitted, [\d.]+/s, ETA", screen)) >= 3


def test_repeated_kill_9_at_random_moments(cli: CliRunner, tmp_path: Path) -> None:
    """Four runs killed at random moments, then one to the end: nothing lost, and no more second jobs
    than calls that were in flight at the kills. Slow by nature: five runs, four of them processes of their own (a
    second of startup each on a loaded machine)."""
    import random

    rnd = random.Random(7)
    path = _manifest(tmp_path, 150)
    in_flight_total = 0
    with running(EmulatorConfig(qps=1000, latency_ms=(5, 40))) as emu:
        for _ in range(4):
            in_flight_total += _kill_run_after(emu, path, tmp_path, calls=rnd.randint(5, 30), qps="300")
        r = cli("run", str(path), "--endpoint", emu.url, "--qps", "300", "--json", env=ENV)
        jobs = _jobs_per_video(emu.emulator.calls)
    assert r.code == 0, r.err
    assert len(jobs) == 150
    assert sum(n - 1 for n in jobs.values()) <= in_flight_total


@pytest.mark.parametrize(("cap_kib", "phase"), [(16, "ingesting"), (400, "sending")])
def test_full_disk_is_a_clear_error_and_corrupts_nothing(
    cli: CliRunner, tmp_path: Path, cap_kib: int, phase: str
) -> None:
    """The state file cannot grow (a file-size limit, as on a full disk), whether it fills while the manifest
    goes in or while calls are recorded: exit 6 saying what to check; the state stays intact and the next run
    finishes the batch without losing a request. (200 requests: more than 16 KiB to ingest, under 400 KiB, and
    their calls outgrow 400 KiB.) Slow by nature: a run in a process of its own under the cap, then 200 calls."""
    import resource

    path = _manifest(tmp_path, 200)
    state_file = tmp_path / "state.sqlite3"
    State(state_file).close()  # an empty store: the schema, and nothing else
    limit = state_file.stat().st_size + cap_kib * 1024

    def cap_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with running(EmulatorConfig(qps=100_000)) as emu:
        proc = subprocess.run(
            [_script(), "run", str(path), "--endpoint", emu.url, "--qps", "2000", "--state", str(state_file)],
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
            preexec_fn=cap_file_size,
            timeout=120,
        )
        assert proc.returncode == 6, proc.stderr
        assert "cannot write the state file" in proc.stderr and "free disk space" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert ("200 new to the state file" in proc.stderr) == (phase == "sending"), proc.stderr
        with sqlite3.connect(state_file) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        r = cli("run", str(path), "--endpoint", emu.url, "--qps", "2000", "--state", str(state_file), "--json", env=ENV)
        jobs = _jobs_per_video(emu.emulator.calls)
    assert r.code == 0, r.err
    assert len(jobs) == 200


def test_wall_clock_jump_is_reported_not_retried() -> None:
    """The machine's clock jumps 20 minutes mid-run: the service refuses the timestamps, the run stops with
    the clock named (fatal, nothing retried in a loop); pacing, on the monotonic clock, is unaffected."""
    from datetime import UTC, datetime, timedelta

    from snapbatch.models import FATAL

    calls = [0]

    def jumping_clock() -> datetime:
        calls[0] += 1
        return datetime.now(UTC) + (timedelta(minutes=20) if calls[0] > 5 else timedelta(0))

    async def go(url: str, state: State) -> Any:
        async with VodClient(url, Credentials(AK_ID, AK_SECRET), clock=jumping_clock) as client:
            return await run_batch(state, client, Limiter(RateWindow(200)), RunOptions())

    with running(EmulatorConfig(qps=1000)) as emu, _state_for(emu, 30) as state:
        result = anyio.run(go, emu.url, state)
        assert len(emu.emulator.calls) <= 5 + 10
        counts = state.counts()
    assert result.stop_reason == "fatal" and result.fatal.kind == FATAL
    assert result.fatal.code == "InvalidTimeStamp.Expired" and "clock" in result.fatal.message
    assert counts["submitted"] == 5 and counts["sending"] == 0


def test_read_only_disk_is_a_clear_error_and_corrupts_nothing(cli: CliRunner, tmp_path: Path) -> None:
    """The disk holding the state turns read-only between runs: exit 6 naming the file; once writable again
    the state is intact and the batch finishes. Needs a tmpfs mount (root), else it is skipped."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted on this machine")
    try:
        path = _manifest(tmp_path, 40)
        state = disk / "s.sqlite3"
        with running() as emu:
            first = cli("run", str(path), "--endpoint", emu.url, "--max-requests", "10", "--state", str(state), env=ENV)
            assert first.code == 5, first.err
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            r = cli("run", str(path), "--endpoint", emu.url, "--state", str(state), env=ENV)
            assert r.code == 6 and str(state) in r.err and "Traceback" not in r.err
            assert len(emu.emulator.calls) == 10  # nothing was sent without a place to record it
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
            with sqlite3.connect(state) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            done = cli("run", str(path), "--endpoint", emu.url, "--state", str(state), "--json", env=ENV)
            jobs = _jobs_per_video(emu.emulator.calls)
        assert done.code == 0 and len(jobs) == 40 and set(jobs.values()) == {1}
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
