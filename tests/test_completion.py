"""From submitted to done: the emulator's jobs complete, their SnapshotComplete events reach the real receiver
over loopback HTTP, and status, report, poll and run show and use what became of every job."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import anyio
import httpx
import pytest

from snapbatch.cli.main import main
from snapbatch.completion.events import EventStore, absorb, parse_event
from snapbatch.completion.poller import PollOptions, poll_jobs
from snapbatch.completion.receiver import callback_signature
from snapbatch.emulator import DROP_AFTER, EmulatorConfig
from snapbatch.emulator.callbacks import JOB_FAILURE_CODE
from snapbatch.models import ACCEPTED, Outcome, Request
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.state import Intent, Settled, State
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.completion_rig import AUTH_KEY, ENV, manifest, rig
from tests.conftest import CliRunner
from tests.emulated import AK_ID, AK_SECRET, renewing_at_two_thirds

FAST = ("--qps", "2000")  # the emulators here allow 1000 calls/s


def _run_quietly(path: Path, url: str) -> int:
    return main(["run", str(path), "--endpoint", url, *FAST], env=ENV, stdout=io.StringIO(), stderr=io.StringIO())


def _report(cli: CliRunner, path: Path, *extra: str) -> list[dict[str, str]]:
    r = cli("report", str(path), *extra)
    assert r.code == 0, r.err
    return list(csv.DictReader(io.StringIO(r.out)))


def _status(cli: CliRunner, path: Path) -> dict[str, object]:
    r = cli("status", str(path), "--json")
    assert r.code == 0, r.err
    doc: dict[str, object] = json.loads(r.out)
    return doc


def test_events_tell_which_videos_got_their_snapshots(cli: CliRunner, tmp_path: Path) -> None:
    """A run's jobs complete on the emulator; their signed events reach the receiver; status counts completed
    and failed jobs with the event's ErrorCode, and report gives each video's completion time, snapshot
    count and URL template, matching the emulator's own record of every job."""
    path = manifest(tmp_path, 40)
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=60, job_fail_rate=0.25, seed=7)) as r:
        run = cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV)
        assert run.code == 0, run.err
        before = _status(cli, path)["completion"]
        assert before == {**before, "completed": 0, "failed": 0, "unknown": 40}  # type: ignore[dict-item]
        assert r.complete_all() == 40
        truth = {job["video"]: job["status"] for job in r.emulator.jobs.values()}
    assert r.receiver.stats.recorded == 40 and r.receiver.stats.rejected == 0
    doc = _status(cli, path)["completion"]
    failed = sum(1 for s in truth.values() if s == "fail")
    assert 0 < failed < 40
    assert doc["completed"] == 40 - failed and doc["failed"] == failed and doc["unknown"] == 0  # type: ignore[index]
    assert doc["failure_codes"] == [{"code": JOB_FAILURE_CODE, "count": failed}]  # type: ignore[index]
    for row in _report(cli, path):
        assert row["completion"] == ("completed" if truth[row["video"]] == "success" else "failed")
        assert row["completed_at"].endswith("Z")
        if row["completion"] == "completed":
            assert row["snapshot_count"] == "4" and "{SnapshotCount}" in row["snapshot_url"]
        else:
            assert row["completion_code"] == JOB_FAILURE_CODE and row["completion_message"]
    only = _report(cli, path, "--completion", "failed")
    assert len(only) == failed
    text = cli("status", str(path)).out
    jobs = text[text.index("jobs of the submitted requests") :]
    assert re.search(rf"^  completed +{40 - failed}$", jobs, flags=re.M)
    assert re.search(rf"^  failed +{failed}$", jobs, flags=re.M)
    assert f"job failures: {JOB_FAILURE_CODE} x{failed}" in jobs


def test_receiver_rejects_unsigned_wrong_and_stale_callbacks(tmp_path: Path) -> None:
    """With an auth key, a callback without headers, with a wrong signature, signed for another URL, or with
    a timestamp older than --max-age gets 403 and a log line, and nothing is recorded; a good one gets 200.
    Another event type is answered 200 and not recorded; a body that is not JSON gets 400."""
    event = {"EventType": "SnapshotComplete", "Status": "success", "VideoId": "v1", "SnapshotInfos": [{"JobId": "J1"}]}
    body = json.dumps(event).encode()
    with rig(tmp_path, EmulatorConfig()) as r:
        now = str(int(r.receiver.clock()))
        stale = str(int(r.receiver.clock()) - 301)
        cases = [
            ({}, 403),
            ({"x-vod-timestamp": now, "x-vod-signature": "0" * 32}, 403),
            ({"x-vod-timestamp": now, "x-vod-signature": callback_signature("https://other/", now, AUTH_KEY)}, 403),
            ({"x-vod-timestamp": stale, "x-vod-signature": callback_signature(r.receiver_url, stale, AUTH_KEY)}, 403),
            ({"x-vod-timestamp": now, "x-vod-signature": callback_signature(r.receiver_url, now, "OtherKey1")}, 403),
        ]
        with httpx.Client(trust_env=False) as client:
            for headers, status in cases:
                assert client.post(r.receiver_url, content=body, headers=headers).status_code == status
            assert r.store.count() == 0
            good = {"x-vod-timestamp": now, "x-vod-signature": callback_signature(r.receiver_url, now, AUTH_KEY)}
            assert client.post(r.receiver_url, content=body, headers=good).status_code == 200
            other = json.dumps({"EventType": "FileUploadComplete", "VideoId": "v1"}).encode()
            assert client.post(r.receiver_url, content=other, headers=good).status_code == 200
            assert client.post(r.receiver_url, content=b"<html>", headers=good).status_code == 400
            assert client.get(r.receiver_url.rsplit("/", 2)[0] + "/healthz").status_code == 200
        assert r.store.count() == 1
    assert len([line for line in r.log if line.startswith("403")]) == 5
    assert any("stale" in line for line in r.log) and any("wrong X-VOD-SIGNATURE" in line for line in r.log)
    assert all(AUTH_KEY not in line for line in r.log)


def test_redelivered_events_change_nothing(cli: CliRunner, tmp_path: Path) -> None:
    """Every event delivered twice: the store holds one per job, the receiver counts the repeats as
    duplicates, and absorbing again leaves the state as it was."""
    path = manifest(tmp_path, 20)
    config = EmulatorConfig(qps=1000, job_seconds=5, callback_duplicate_rate=1.0, job_fail_rate=0.3, seed=3)
    with rig(tmp_path, config) as r:
        assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 0
        r.complete_all()
        assert r.store.count() == 20
    assert r.callbacks.stats.delivered == 40 and r.receiver.stats.duplicates == 20
    first = _report(cli, path)
    again = _report(cli, path)
    assert first == again and all(row["completion"] in ("completed", "failed") for row in first)


def test_events_are_recorded_while_a_run_holds_the_lock(cli: CliRunner, tmp_path: Path) -> None:
    """While another process's run holds the batch's lock, events are still recorded, and status (which
    brings them into the state in short transactions) shows them."""
    path = manifest(tmp_path, 10)
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=5)) as r:
        assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 0
        holder = State(tmp_path / ".snapbatch" / "t.sqlite3")
        holder.lock(0.0)
        try:
            assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 3  # the lock is really held
            r.complete_all()
            doc = _status(cli, path)
            assert doc["running"] is not None
            assert doc["completion"]["completed"] == 10  # type: ignore[index]
        finally:
            holder.close()


def test_an_event_resolves_a_request_in_doubt_so_it_is_not_sent_again(cli: CliRunner, tmp_path: Path) -> None:
    """Answers lost after the job was made (drop-after) leave the request in doubt with no JobId; the job's
    event carries the request key in Extend (the same on every attempt), so the request becomes submitted
    and completed, and the next run sends nothing."""
    path = manifest(tmp_path, 1)
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=5, faults={DROP_AFTER: 1.0})) as r:
        first = cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV)
        assert first.code == 5, first.err  # no answer ever came back
        made = len(r.emulator.jobs)
        assert made >= 1
        row = _report(cli, path)[0]
        assert row["status"] == "in_doubt" and row["job_id"] == ""
        # every attempt carried the same key, so whichever job's event arrives names the request
        assert {json.loads(job["extend"])["snapbatch"] for job in r.emulator.jobs.values()} == {row["key"]}
        r.emulator.config.faults = {}
        r.complete_all()
        calls = len(r.emulator.calls)
        second = cli("run", str(path), "--endpoint", r.url, *FAST, "--json", env=ENV)
        assert second.code == 0, second.err
        assert len(r.emulator.calls) == calls  # nothing sent
    assert "updated from the receiver's events" in second.err
    row = _report(cli, path)[0]
    assert row["status"] == "submitted" and row["job_id"] in r.emulator.jobs and row["completion"] == "completed"


def test_poll_asks_about_jobs_whose_events_were_lost(cli: CliRunner, tmp_path: Path) -> None:
    """Every event dropped: poll asks GetJobDetail; while jobs are processing it exits 5, once all are done
    0 (all succeeded), and with some jobs failed 1; what it records matches the emulator's jobs."""
    for fail_rate, done_code in ((0.0, 0), (0.3, 1)):
        work = tmp_path / f"fail-{fail_rate}"
        work.mkdir()
        path = manifest(work, 30)
        config = EmulatorConfig(qps=1000, job_seconds=60, callback_drop_rate=1.0, job_fail_rate=fail_rate, seed=11)
        with rig(work, config) as r:
            assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 0
            early = cli("poll", str(path), "--endpoint", r.url, "--qps", "500", "--json", env=ENV)
            assert early.code == 5, early.err
            assert json.loads(early.out)["completion"]["processing"] == 30
            r.complete_all()
            assert r.callbacks.stats.dropped == 30 and r.store.count() == 0
            late = cli("poll", str(path), "--endpoint", r.url, "--qps", "500", env=ENV)
            assert late.code == done_code, late.err
            truth = {job["video"]: job["status"] for job in r.emulator.jobs.values()}
        rows = _report(cli, path)
        assert {row["video"]: row["completion"] for row in rows} == {
            v: "completed" if s == "success" else "failed" for v, s in truth.items()
        }


def test_poll_records_a_job_the_service_does_not_know_as_failed(cli: CliRunner, tmp_path: Path) -> None:
    """Jobs the service no longer knows (here: a fresh emulator that never took them) are final after one
    pass: failed with GetJobDetail's code, exit 1, so `poll --until-done` ends instead of asking forever."""
    path = manifest(tmp_path, 6)
    config = EmulatorConfig(qps=1000, job_seconds=60, callback_drop_rate=1.0)
    with rig(tmp_path, config) as r:
        assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 0
    with rig(tmp_path / "elsewhere", EmulatorConfig(qps=1000, callback_drop_rate=1.0)) as fresh:
        polled = cli("poll", str(path), "--endpoint", fresh.url, "--qps", "500", "--until-done", env=ENV)
        assert polled.code == 1, polled.err
        assert len(fresh.emulator.calls) == 6  # one pass: nothing is asked twice
    rows = _report(cli, path)
    assert {row["completion"] for row in rows} == {"failed"}
    assert {row["completion_code"] for row in rows} == {"InvalidParameter"}


def test_poll_until_done_waits_between_passes_and_times_out(tmp_path: Path) -> None:
    """poll_jobs with until_done: jobs processing at the first pass are asked again after the pause (an
    injected sleep that moves the emulator's clock) and found done; with jobs that never finish in time it
    stops at the timeout with them still open."""
    path = manifest(tmp_path, 12)
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=100, callback_drop_rate=1.0)) as r:
        assert _run_quietly(path, r.url) == 0
        state = State(tmp_path / ".snapbatch" / "t.sqlite3")
        fake = [0.0]

        async def sleep(seconds: float) -> None:
            fake[0] += seconds
            r.clock.advance(seconds)

        async def poll(options: PollOptions) -> object:
            creds = Credentials(AK_ID, AK_SECRET, None, "test")
            async with VodClient(r.url, creds) as client:
                return await poll_jobs(
                    state, client, Limiter(RateWindow(1000)), options, clock=lambda: fake[0], sleep=sleep
                )

        try:
            done = anyio.run(poll, PollOptions(until_done=True, every_s=60, timeout_s=1000))
            assert done.passes == 3 and done.open_left == 0 and not done.timed_out  # type: ignore[attr-defined]
            assert state.completion_counts()["completed"] == 12
        finally:
            state.close()

    path = manifest(tmp_path, 5, batch="slow")
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=10_000, callback_drop_rate=1.0)) as r:
        assert _run_quietly(path, r.url) == 0
        state = State(tmp_path / ".snapbatch" / "slow.sqlite3")
        fake[0] = 0.0
        try:
            result = anyio.run(poll, PollOptions(until_done=True, every_s=60, timeout_s=300))
            assert result.timed_out and result.open_left == 5  # type: ignore[attr-defined]
            assert fake[0] == 300
        finally:
            state.close()


def test_a_stop_during_the_pause_between_passes_ends_the_poll_at_once(tmp_path: Path) -> None:
    """poll_jobs with until_done, stopped (SIGTERM) while it pauses between passes: the pause is cut short and
    the poll returns with the jobs still open, instead of sitting out --every (here a sleep that never ends
    by itself; a bound of 60 s only keeps a regression from hanging the suite)."""
    path = manifest(tmp_path, 4)
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=10_000, callback_drop_rate=1.0)) as r:
        assert _run_quietly(path, r.url) == 0
        state = State(tmp_path / ".snapbatch" / "t.sqlite3")
        paused = []

        async def poll() -> object:
            stop = anyio.Event()

            async def sleep(seconds: float) -> None:
                paused.append(seconds)
                stop.set()  # the signal comes while the poll pauses
                await anyio.sleep_forever()

            creds = Credentials(AK_ID, AK_SECRET, None, "test")
            with anyio.fail_after(60):
                async with VodClient(r.url, creds) as client:
                    options = PollOptions(until_done=True, every_s=3600)
                    return await poll_jobs(state, client, Limiter(RateWindow(1000)), options, sleep=sleep, stop=stop)

        try:
            result = anyio.run(poll)
        finally:
            state.close()
    assert paused == [3600] and result.passes == 1 and result.open_left == 4  # type: ignore[attr-defined]


def test_resubmit_failed_jobs_sends_them_again(cli: CliRunner, tmp_path: Path) -> None:
    """Requests whose job failed after submission are sent again with --resubmit-failed-jobs (and only
    then); their new jobs complete and replace the failure."""
    path = manifest(tmp_path, 8)
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=5, job_fail_rate=1.0)) as r:
        assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 0
        r.complete_all()
        assert _status(cli, path)["completion"]["failed"] == 8  # type: ignore[index]
        plain = cli("run", str(path), "--endpoint", r.url, *FAST, "--json", env=ENV)
        assert json.loads(plain.out)["submitted"] == 0
        r.emulator.config.job_fail_rate = 0.0
        again = cli("run", str(path), "--endpoint", r.url, *FAST, "--resubmit-failed-jobs", "--json", env=ENV)
        assert again.code == 0 and json.loads(again.out)["submitted"] == 8, again.err
        assert "8 requests whose job failed" in again.err
        r.complete_all()
    assert {row["completion"] for row in _report(cli, path)} == {"completed"}
    assert len(r.emulator.jobs) == 16


def test_a_batch_with_failing_jobs_and_lost_events_ends_fully_known(cli: CliRunner, tmp_path: Path) -> None:
    """200 videos, 5% of jobs failing, 10% of events lost and 10% delivered twice: after the run, the
    callbacks and one poll, every video's final state is known and matches the emulator's; poll exits 1
    (some jobs failed). The same batch of 100 without failures exits 0. (bench/completion.py runs 10,000;
    here the seeded faults still leave about 10 failed jobs and 20 lost events, all a run must reconcile.) Slow by
    nature: 300 calls sent in-process, their callbacks and a poll."""
    for fail_rate, expected, videos in ((0.05, 1, 200), (0.0, 0, 100)):
        work = tmp_path / f"f{fail_rate}"
        work.mkdir()
        path = manifest(work, videos)
        config = EmulatorConfig(
            qps=1000,
            job_seconds=30,
            job_fail_rate=fail_rate,
            callback_drop_rate=0.10,
            callback_duplicate_rate=0.10,
            seed=2026,
        )
        with rig(work, config) as r:
            assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 0
            r.complete_all()
            stats = r.callbacks.stats
            assert stats.dropped > 0 and stats.delivered > videos - stats.dropped
            polled = cli("poll", str(path), "--endpoint", r.url, "--qps", "1000", "--json", env=ENV)
            truth = {job["video"]: job["status"] for job in r.emulator.jobs.values()}
        assert polled.code == expected, polled.err
        doc = json.loads(polled.out)
        assert doc["poll"]["asked"] == stats.dropped  # only what the callbacks missed
        rows = _report(cli, path)
        assert len(rows) == videos
        assert {row["video"]: row["completion"] for row in rows} == {
            v: "completed" if s == "success" else "failed" for v, s in truth.items()
        }


def test_absorb_finds_an_event_seen_before_its_job_id_was_recorded(tmp_path: Path) -> None:
    """An event absorbed (passed by the cursor) before the run recorded its JobId is still found by the
    next absorb, which looks up the jobs submitted since shortly before the last one."""
    state = State(tmp_path / "s.sqlite3")
    store = EventStore(tmp_path / "e.sqlite3")
    try:
        state.ingest([Request("k1", "j", None, "VideoId", "v1", {"VideoId": "v1", "Count": "1"})], "fp", "b")
        event = {"EventType": "SnapshotComplete", "Status": "success", "SnapshotInfos": [{"JobId": "J1"}]}
        store.add(parse_event(json.dumps(event).encode()) or [])
        assert absorb(state, store) == 0  # no request has J1 yet
        state.apply([Intent("k1"), Settled("k1", Outcome(ACCEPTED, job_id="J1"))])
        assert absorb(state, store) == 1
        assert next(state.rows()).completion == "success"
    finally:
        state.close()
        store.close()


def test_emulator_job_detail_and_event_agree(tmp_path: Path) -> None:
    """GetJobDetail says Processing until the job's time, then Success or Fail exactly as its event does."""
    path = manifest(tmp_path, 10)
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=50, job_fail_rate=0.5, seed=5)) as r:
        assert _run_quietly(path, r.url) == 0

        async def details() -> list[str]:
            async with VodClient(r.url, Credentials(AK_ID, AK_SECRET, None, "t")) as client:
                return [str((await client.job_detail(j))[1]["Status"]) for j in sorted(r.emulator.jobs)]  # type: ignore[index]

        assert set(anyio.run(details)) == {"Processing"}
        r.complete_all()
        after = anyio.run(details)
        store = EventStore(r.events)
        events = {c.job_id: c.status for _, c in store.since(0, 100)}
        store.close()
    assert [{"Success": "success", "Fail": "fail"}[s] for s in after] == [events[j] for j in sorted(r.emulator.jobs)]
    assert after.count("Fail") == sum(j["status"] == "fail" for j in r.emulator.jobs.values())


def test_old_events_do_not_mark_a_fresh_batch_submitted(cli: CliRunner, tmp_path: Path) -> None:
    """The event store outlives a deleted state file: a batch started afresh (same keys) sends every
    request again instead of taking the old jobs' events, keyed by the same request keys, for its own."""
    path = manifest(tmp_path, 6)
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=5)) as r:
        assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 0
        r.complete_all()
        assert r.store.count() == 6
        for leftover in (tmp_path / ".snapbatch").glob("t.sqlite3*"):
            leftover.unlink()
        again = cli("run", str(path), "--endpoint", r.url, *FAST, "--json", env=ENV)
        assert again.code == 0 and json.loads(again.out)["submitted"] == 6, again.err
    assert {row["completion"] for row in _report(cli, path)} == {"unknown"}


def test_an_interrupted_poll_resumes_with_the_jobs_it_had_not_asked(tmp_path: Path) -> None:
    """A poll stopped after 5 answers has recorded them; the next poll asks the 7 jobs never asked first,
    then the 5 again (still processing)."""
    path = manifest(tmp_path, 12)
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=1000, callback_drop_rate=1.0)) as r:
        assert _run_quietly(path, r.url) == 0
        state = State(tmp_path / ".snapbatch" / "t.sqlite3")

        class Counting:
            def __init__(self, client: VodClient, stop: anyio.Event, after: int) -> None:
                self.client, self.stop, self.after = client, stop, after
                self.asked: list[str] = []

            async def job_detail(self, job_id: str) -> tuple[Outcome, dict[str, object] | None]:
                self.asked.append(job_id)
                answer = await self.client.job_detail(job_id)
                if len(self.asked) >= self.after:
                    self.stop.set()
                return answer

        async def poll(after: int) -> list[str]:
            stop = anyio.Event()
            async with VodClient(r.url, Credentials(AK_ID, AK_SECRET, None, "t")) as client:
                source = Counting(client, stop, after)
                options = PollOptions(concurrency=1)
                await poll_jobs(state, source, Limiter(RateWindow(1000)), options, stop=stop)
                return source.asked

        try:
            first = anyio.run(poll, 5)
            second = anyio.run(poll, 100)
        finally:
            state.close()
    assert len(first) == 5 and len(second) == 12
    assert set(second[:7]).isdisjoint(first) and set(second[7:]) == set(first)


def test_a_missing_events_store_given_by_name_is_a_usage_error(cli: CliRunner, tmp_path: Path) -> None:
    """--events naming a file that does not exist is a usage error (exit 2) that says what the file is;
    without --events, a batch with no event store beside it simply has nothing to absorb."""
    path = manifest(tmp_path, 2)
    with rig(tmp_path, EmulatorConfig(qps=1000)) as r:
        assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 0
    (tmp_path / ".snapbatch" / "events.sqlite3").unlink()
    r2 = cli("status", str(path), "--events", str(tmp_path / "nope.sqlite3"))
    assert r2.code == 2 and "snapbatch receive" in r2.err
    assert cli("status", str(path)).code == 0


def test_poll_renews_credentials_ahead_of_expiry_in_the_background(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`snapbatch poll` keeps its credentials fresh like run does: with credentials two thirds into their life
    (by an injected clock that then stands still, so no call finds them expired), its background task
    exchanges them once and later GetJobDetail calls are signed with the new key. Slow by nature: 60 GetJobDetail
    calls at 30/s, time for the background renewal to land among them."""
    provider, fetches = renewing_at_two_thirds()
    path = manifest(tmp_path, 60)
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=600, callback_drop_rate=1.0)) as r:
        assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 0
        r.emulator.config.credentials.update({k: (f"secret-{k}", f"token-{k}") for k in ("STS.1", "STS.2")})
        monkeypatch.setattr("snapbatch.cli.completion.find_provider", lambda env, home, profile, log: provider)
        polled = cli("poll", str(path), "--endpoint", r.url, "--qps", "30", "--json", env=ENV)
        keys = [c.get("ak") for c in r.emulator.calls if c.get("action") == "GetJobDetail"]
    assert polled.code == 5, polled.err  # the jobs are still processing
    assert json.loads(polled.out)["poll"]["asked"] == 60
    assert fetches == ["STS.1", "STS.2"] and provider.renewals == 1 and "STS.2" in keys
    assert "as STS.1 (test source)" in polled.err  # the log names the source, never the secret
    assert "secret-STS" not in polled.err and "token-STS" not in polled.err


def test_poll_says_when_there_is_no_event_store_beside_the_manifest(cli: CliRunner, tmp_path: Path) -> None:
    """A receiver run from another directory writes its store elsewhere: poll, finding none beside the
    manifest, says so and where it looked (else every failure's reason is silently GetJobDetail's none)."""
    path = manifest(tmp_path, 2)
    with rig(tmp_path, EmulatorConfig(qps=1000)) as r:
        assert cli("run", str(path), "--endpoint", r.url, *FAST, env=ENV).code == 0
        (tmp_path / ".snapbatch" / "events.sqlite3").unlink()
        polled = cli("poll", str(path), "--endpoint", r.url, env=ENV)
    assert polled.code == 5, polled.err
    assert f"no event store at {tmp_path / '.snapbatch' / 'events.sqlite3'}" in polled.err
    assert "--events" in polled.err
