"""`--metrics-file` on run and poll: the Prometheus text node_exporter's textfile collector reads, parsed with
the official client's parser and checked against the state (through `status --json` and the file itself) and
the emulator's own record of the calls, on every way a command ends; atomic writes; refusals."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from snapbatch.cli.main import main
from snapbatch.emulator import DROP_AFTER, EmulatorConfig
from snapbatch.files import write_atomically
from snapbatch.manifest.load import load_manifest
from snapbatch.metrics import EVERY_S, MetricsFile, Snapshot, render
from snapbatch.models import RequestStatus
from snapbatch.run.runner import RunOptions
from snapbatch.run.session import Progress, RunEvents, Tally, run_manifest
from snapbatch.run.state import State
from snapbatch.vod.credentials import Credentials
from tests.completion_rig import manifest, rig
from tests.conftest import ROOT, CliRunner
from tests.emulated import AK_ID, AK_SECRET, running
from tests.test_run import ENV, _manifest
from tests.test_run_resilience import _script
from tests.test_stopping import _finish, _wait_for_line

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
STATUSES = [s.value for s in RequestStatus]


def _parse(text: str) -> Samples:
    """Every sample of the file by name and labels (batch and command left out, after checking they are on
    every sample), as the official parser reads it."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, f"{family.name} has no HELP"
        for sample in family.samples:
            labels = dict(sample.labels)
            assert "batch" in labels and "command" in labels, sample
            labels.pop("batch"), labels.pop("command")
            found[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return found


def _metrics(path: Path) -> Samples:
    return _parse(path.read_text(encoding="utf-8"))


def _get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _labels(path: Path, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in text_string_to_metric_families(path.read_text(encoding="utf-8"))
        for sample in family.samples
    }


def _status(cli: CliRunner, path: Path, *extra: str) -> dict[str, object]:
    r = cli("status", str(path), "--json", *extra)
    assert r.code == 0, r.err
    doc: dict[str, object] = json.loads(r.out)
    return doc


def _last_submitted(state_file: Path) -> float:
    with sqlite3.connect(state_file) as db:
        return float(db.execute("SELECT MAX(submitted_at) FROM requests").fetchone()[0])


def _no_temporaries(directory: Path) -> None:
    assert [p.name for p in directory.iterdir() if p.name.endswith(".tmp")] == []


def test_a_run_with_faults_writes_the_states_counts_and_the_emulators_answers(cli: CliRunner, tmp_path: Path) -> None:
    """A run with throttling, 5xx and unknown videos exits 1: the file's requests by status equal `status --json`,
    its answers by outcome equal the emulator's record of the calls, retries the JSON summary's, the last accepted
    time the state's; exit code 1 with reason failed; mode 0644, no temporary left, no key id or secret."""
    path = _manifest(tmp_path, 60)
    known = {f"video-{i:05d}": None for i in range(60) if i % 10}  # every tenth video does not exist
    config = EmulatorConfig(qps=1000, faults={"Throttling.User": 0.1, "InternalError": 0.1}, videos=known, seed=5)
    prom = tmp_path / "metrics" / "snapbatch.prom"
    prom.parent.mkdir()
    with running(config) as emu:
        r = cli("run", str(path), "--endpoint", emu.url, "--qps", "500", "--json", "--metrics-file", str(prom), env=ENV)
        calls = list(emu.emulator.calls)
    assert r.code == 1, r.err
    m = _metrics(prom)
    counts = _status(cli, path)["counts"]
    assert isinstance(counts, dict)
    assert {s: _get(m, "snapbatch_requests", status=s) for s in [*STATUSES, "not_in_manifest"]} == {
        s: counts[s] for s in [*STATUSES, "not_in_manifest"]
    }
    assert counts["failed"] == 6 and counts["submitted"] == 54
    codes = [c.get("code") for c in calls]
    assert _get(m, "snapbatch_calls_total", outcome="accepted") == sum(c.get("outcome") == "accepted" for c in calls)
    assert _get(m, "snapbatch_calls_total", outcome="throttled") == codes.count("Throttling.User") > 0
    assert _get(m, "snapbatch_calls_total", outcome="transient") == codes.count("InternalError") > 0
    assert _get(m, "snapbatch_calls_total", outcome="failed") == codes.count("InvalidVideo.NotFound") == 6
    assert _get(m, "snapbatch_calls_total", outcome="in_doubt") == 0
    assert _get(m, "snapbatch_retries_total") == json.loads(r.out)["retries"] > 0
    assert _get(m, "snapbatch_last_accepted_timestamp_seconds") == _last_submitted(
        tmp_path / ".snapbatch" / "t.sqlite3"
    )
    assert _get(m, "snapbatch_limit_per_second") == 500
    rate = _get(m, "snapbatch_accepted_per_second")
    assert rate is not None and rate > 0
    assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="failed")) == (1, 1)
    start, end = _get(m, "snapbatch_start_timestamp_seconds"), _get(m, "snapbatch_end_timestamp_seconds")
    assert start is not None and end is not None and start <= end
    assert _get(m, "snapbatch_finished_timestamp_seconds") == end  # exit 1 is a run that finished
    assert _labels(prom, "batch") == {"t"} and _labels(prom, "command") == {"run"}
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    _no_temporaries(prom.parent)
    text = prom.read_text()
    assert AK_ID not in text and AK_SECRET not in text


def test_max_requests_exits_5_with_its_reason_and_counts_as_finished(cli: CliRunner, tmp_path: Path) -> None:
    """`--max-requests 4` of 10: exit 5, reason max-requests (a slice that did what it was asked: finished), 4
    submitted and 6 pending; then every answer lost: exit 5 with reason unreachable, the lost answers counted
    as in_doubt, the requests in doubt as the state has them."""
    path = _manifest(tmp_path, 10)
    prom = tmp_path / "run.prom"
    with running(EmulatorConfig(qps=1000)) as emu:
        r = cli("run", str(path), "--endpoint", emu.url, "--max-requests", "4", "--metrics-file", str(prom), env=ENV)
    assert r.code == 5, r.err
    m = _metrics(prom)
    assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="max-requests")) == (5, 1)
    assert [_get(m, "snapbatch_requests", status=s) for s in ("submitted", "pending")] == [4, 6]
    assert _get(m, "snapbatch_finished_timestamp_seconds") == _get(m, "snapbatch_end_timestamp_seconds")
    with running(EmulatorConfig(qps=1000, faults={DROP_AFTER: 1.0})) as emu:  # every answer lost: in doubt
        r = cli("run", str(path), "--endpoint", emu.url, "--metrics-file", str(prom), env=ENV)
        lost = sum(c.get("outcome") == DROP_AFTER for c in emu.emulator.calls)
    m = _metrics(prom)
    assert r.code == 5 and _get(m, "snapbatch_calls_total", outcome="in_doubt") == lost > 0
    reasons = [labels for (name, labels) in m if name == "snapbatch_exit_reason"]
    assert reasons == [(("reason", "unreachable"),)]  # no answer ever came: the run's own word for it
    counts = _status(cli, path)["counts"]
    assert isinstance(counts, dict)
    assert _get(m, "snapbatch_requests", status="in_doubt") == counts["in_doubt"] > 0


def test_sigterm_mid_run_writes_130_and_keeps_when_the_run_last_finished(tmp_path: Path) -> None:
    """A real process: a first run stopped by --max-requests finishes (exit 5); the next is SIGTERMed while it
    waits: while it goes the file says running (no exit code) and already counts from the state; after the
    signal it says 130 interrupted, with the first run's finish time kept, since this one did not finish."""
    path = _manifest(tmp_path, 5)
    prom = tmp_path / "run.prom"
    with running(EmulatorConfig(qps=1000)) as emu:
        first = main(
            ["run", str(path), "--endpoint", emu.url, "--max-requests", "1", "--metrics-file", str(prom)],
            env=ENV,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
        assert first == 5
        finished = _get(_metrics(prom), "snapbatch_finished_timestamp_seconds")
        assert finished is not None
        proc = subprocess.Popen(
            [
                *(_script(), "run", str(path), "--endpoint", emu.url),
                *("--qps", "0.01", "--progress-every", "0.05", "--metrics-file", str(prom)),
            ],
            env={**os.environ, **ENV},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        seen: list[str] = []
        _wait_for_line(proc.stderr, "2/5 submitted", seen)  # its first call is answered; the next is 100 s away
        during = _metrics(prom)
        proc.send_signal(signal.SIGTERM)
        err = _finish(proc, seen)
    assert proc.returncode == 130, err
    assert _get(during, "snapbatch_exit_reason", reason="running") == 1
    assert _get(during, "snapbatch_exit_code") is None and _get(during, "snapbatch_end_timestamp_seconds") is None
    assert _get(during, "snapbatch_finished_timestamp_seconds") == finished
    assert _get(during, "snapbatch_requests", status="pending") == 4  # the state as this run started
    m = _metrics(prom)
    assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="interrupted")) == (130, 1)
    assert _get(m, "snapbatch_finished_timestamp_seconds") == finished
    assert [_get(m, "snapbatch_requests", status=s) for s in ("submitted", "pending")] == [2, 3]
    assert _get(m, "snapbatch_calls_total", outcome="accepted") == 1
    _no_temporaries(tmp_path)


def test_a_sigterm_during_the_last_write_waits_for_it(tmp_path: Path) -> None:
    """A SIGTERM that comes while the metrics file's last write is being made (the moment before the exit) is
    ignored for that moment: the write completes and the process exits on its own, instead of dying with the
    file still saying "running". A real signal to a real process."""
    script = (
        "import os, signal\n"
        "from snapbatch.cli.main import _sigterm_deferred\n"
        "with _sigterm_deferred(True):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    print('the last write made', flush=True)\n"
        "print('SIGTERM handled as before:', signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["the last write made", "SIGTERM handled as before: True"]


def test_poll_writes_jobs_by_completion_and_its_exit(cli: CliRunner, tmp_path: Path) -> None:
    """poll with every event lost: first exit 5 (jobs open, reason open-jobs) with 30 processing, then, the
    jobs done, exit 1 with reason failed; jobs by completion equal `status --json`'s, the answers its calls."""
    path = manifest(tmp_path, 30)
    prom = tmp_path / "poll.prom"
    config = EmulatorConfig(qps=1000, job_seconds=60, callback_drop_rate=1.0, job_fail_rate=0.3, seed=11)
    with rig(tmp_path, config) as r:
        assert cli("run", str(path), "--endpoint", r.url, "--qps", "2000", env=ENV).code == 0
        early = cli("poll", str(path), "--endpoint", r.url, "--qps", "500", "--metrics-file", str(prom), env=ENV)
        assert early.code == 5, early.err
        m = _metrics(prom)
        assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="open-jobs")) == (5, 1)
        assert _get(m, "snapbatch_jobs", completion="processing") == 30
        assert _get(m, "snapbatch_job_details_total", answer="processing") == 30
        assert _get(m, "snapbatch_poll_passes_total") == 1
        r.complete_all()
        late = cli("poll", str(path), "--endpoint", r.url, "--qps", "500", "--metrics-file", str(prom), env=ENV)
        truth = [job["status"] for job in r.emulator.jobs.values()]
    assert late.code == 1, late.err
    m = _metrics(prom)
    completion = _status(cli, path)["completion"]
    assert isinstance(completion, dict)
    assert {k: _get(m, "snapbatch_jobs", completion=k) for k in ("completed", "failed", "processing", "unknown")} == {
        k: completion[k] for k in ("completed", "failed", "processing", "unknown")
    }
    assert _get(m, "snapbatch_jobs", completion="failed") == truth.count("fail") > 0
    assert _get(m, "snapbatch_job_details_total", answer="fail") == truth.count("fail")
    assert _get(m, "snapbatch_job_details_total", answer="success") == truth.count("success")
    assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="failed")) == (1, 1)
    assert _get(m, "snapbatch_last_completed_timestamp_seconds") is not None
    assert _labels(prom, "command") == {"poll"}
    _no_temporaries(tmp_path)


def test_sigterm_during_polls_pause_writes_interrupted(tmp_path: Path) -> None:
    """A real `poll --until-done` process, SIGTERMed once it has asked about every job (it then pauses an hour
    before the next pass): it ends at once with exit 5, and its file says reason interrupted, 4 jobs processing,
    and no finish time (it did not end by itself)."""
    path = manifest(tmp_path, 4)
    prom = tmp_path / "poll.prom"
    with rig(tmp_path, EmulatorConfig(qps=1000, job_seconds=10_000, callback_drop_rate=1.0)) as r:
        assert main(["run", str(path), "--endpoint", r.url], env=ENV, stdout=io.StringIO(), stderr=io.StringIO()) == 0
        asked = threading.Event()

        def observe(entry: dict[str, object]) -> None:
            if len(r.emulator.calls) >= 8:  # the run's 4 SubmitSnapshotJob calls, then the poll's 4 questions
                asked.set()

        r.emulator.observers.append(observe)
        proc = subprocess.Popen(
            [
                *(_script(), "poll", str(path), "--endpoint", r.url),
                *("--until-done", "--every", "3600", "--metrics-file", str(prom)),
            ],
            env={**os.environ, **ENV},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert asked.wait(60), "the poll never asked about the 4 jobs"
        proc.send_signal(signal.SIGTERM)
        err = _finish(proc, [])
    assert proc.returncode == 5, err
    m = _metrics(prom)
    assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="interrupted")) == (5, 1)
    assert _get(m, "snapbatch_jobs", completion="processing") == 4
    assert _get(m, "snapbatch_finished_timestamp_seconds") is None
    assert _get(m, "snapbatch_end_timestamp_seconds") is not None


def test_credentials_locked_and_state_exits_write_their_reason(cli: CliRunner, tmp_path: Path) -> None:
    """Exit 4 (no credentials), 3 (the state locked by another run) and 6 (another batch's state): each writes
    its exit code and reason for the manifest's batch; counts only where the batch's own state can be read."""
    path = _manifest(tmp_path, 3)
    prom = tmp_path / "run.prom"
    bare = {"HOME": "/nonexistent"}
    assert cli("run", str(path), "--endpoint", "http://127.0.0.1:9", "--metrics-file", str(prom), env=bare).code == 4
    m = _metrics(prom)
    assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="fatal")) == (4, 1)
    assert _labels(prom, "batch") == {"t"} and _get(m, "snapbatch_requests", status="pending") is None
    with running(EmulatorConfig(qps=1000)) as emu:
        assert cli("run", str(path), "--endpoint", emu.url, "--max-requests", "1", env=ENV).code == 5
        holder = State(tmp_path / ".snapbatch" / "t.sqlite3")
        holder.lock(0.0)
        try:
            r = cli("run", str(path), "--endpoint", emu.url, "--metrics-file", str(prom), env=ENV)
        finally:
            holder.close()
        assert r.code == 3, r.err
        m = _metrics(prom)
        assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="locked")) == (3, 1)
        assert [_get(m, "snapbatch_requests", status=s) for s in ("submitted", "pending")] == [1, 2]
        other = tmp_path / "other.yaml"
        other.write_text(path.read_text().replace("batch: t", "batch: other"))
        r = cli(
            "run", str(other), "--endpoint", emu.url, "--state", str(tmp_path / ".snapbatch" / "t.sqlite3"),
            "--metrics-file", str(prom), env=ENV,
        )  # fmt: skip
    assert r.code == 6, r.err
    m = _metrics(prom)
    assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="state")) == (6, 1)
    assert _labels(prom, "batch") == {"other"} and _get(m, "snapbatch_requests", status="pending") is None


def test_an_unusable_metrics_path_is_refused_before_anything_is_sent(cli: CliRunner, tmp_path: Path) -> None:
    """A name not ending in .prom, a missing directory, a directory that cannot be written in, a directory as
    the name: exit 2 with a sentence saying why, no call made, no state file made."""
    path = _manifest(tmp_path, 3)
    if os.geteuid() == 0:
        unwritable = Path("/sys")  # sysfs takes no regular files, not even root's
    else:
        unwritable = tmp_path / "ro"
        unwritable.mkdir(mode=0o555)
    cases = {
        tmp_path / "metrics.txt": "must end in .prom",
        tmp_path / "missing" / "m.prom": f"the directory {tmp_path / 'missing'} does not exist",
        unwritable / "m.prom": f"cannot write in {unwritable}",
        tmp_path: "must end in .prom",
    }
    (tmp_path / "dir.prom").mkdir()
    cases[tmp_path / "dir.prom"] = "is a directory"
    with running(EmulatorConfig(qps=1000)) as emu:
        for target, words in cases.items():
            r = cli("run", str(path), "--endpoint", emu.url, "--metrics-file", str(target), env=ENV)
            assert r.code == 2 and words in r.err, (target, r.err)
            p = cli("poll", str(path), "--endpoint", emu.url, "--metrics-file", str(target), env=ENV)
            assert p.code == 2 and words in p.err, (target, p.err)
        assert emu.emulator.calls == []
    assert not (tmp_path / ".snapbatch").exists()


def test_writes_replace_the_file_whole_and_leave_no_temporary(tmp_path: Path) -> None:
    """Each write is a new file renamed over the old (a new inode every time, never rewritten in place), mode
    0644 whatever the umask, parseable after every one of several writes, even with a reader racing them; a
    write that fails leaves no temporary and is logged once while the command goes on."""
    prom = tmp_path / "m.prom"
    texts = [render(Snapshot("b", "run", 1.0, requests={"pending": n, "submitted": 100 - n})) for n in range(40)]
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            if prom.exists():
                seen.append(prom.read_text(encoding="utf-8"))

    reader = threading.Thread(target=read)
    before = os.umask(0o077)
    try:
        reader.start()
        inodes = set()
        for n, text in enumerate(texts):
            write_atomically(prom, text)
            inodes.add(prom.stat().st_ino)
            assert _get(_metrics(prom), "snapbatch_requests", status="pending") == n
            assert stat.S_IMODE(prom.stat().st_mode) == 0o644
            _no_temporaries(tmp_path)
    finally:
        done.set()
        reader.join()
        os.umask(before)
    assert len(inodes) > 1  # a rename each time (inodes may be reused once freed, so not necessarily 40)
    assert all(text in texts for text in seen)  # the reader never saw half a file
    log: list[str] = []
    ticks = iter(float(t) for t in range(0, 1000, 5))
    metrics = MetricsFile(prom, "run", log=log.append, monotonic=lambda: next(ticks))
    metrics.for_batch("b", tmp_path / "none.sqlite3", 30.0)
    prom.unlink()
    prom.mkdir()  # the rename cannot replace a directory
    (prom / "x").write_text("")
    progress = Progress({s: 0 for s in [*STATUSES, "not_in_manifest"]}, Tally(), 1.0, True, False)
    metrics.progress(progress)
    metrics.progress(progress)  # under EVERY_S since the last try: not tried again
    (prom / "x").unlink()
    prom.rmdir()
    metrics._last_write -= EVERY_S
    metrics.progress(progress)
    _no_temporaries(tmp_path)
    assert len(log) == 2 and "cannot write the metrics file" in log[0] and "written again" in log[1], log
    assert _get(_metrics(prom), "snapbatch_exit_reason", reason="running") == 1


def test_progress_writes_come_at_most_every_interval(tmp_path: Path) -> None:
    """On the progress tick the file is rewritten only when EVERY_S has passed since the last write (an
    injected clock): ticks 1 s apart give a write every EVERY_S, with the tick's counts."""
    prom = tmp_path / "m.prom"
    now = [0.0]
    metrics = MetricsFile(prom, "run", log=lambda message: None, monotonic=lambda: now[0])
    metrics.for_batch("b", tmp_path / "none.sqlite3", 30.0)
    writes = []
    for second in range(int(3 * EVERY_S) + 1):
        now[0] = float(second)
        counts = {s: 0 for s in [*STATUSES, "not_in_manifest"]} | {"submitted": second}
        metrics.progress(Progress(counts, Tally(), float(second), True, False, retries=second))
        if prom.exists() and _get(_metrics(prom), "snapbatch_requests", status="submitted") == second:
            writes.append(second)
    assert writes == [0, int(EVERY_S), int(2 * EVERY_S), int(3 * EVERY_S)]
    assert _get(_metrics(prom), "snapbatch_retries_total") == 3 * EVERY_S


def test_a_run_checkpoints_off_the_event_loop_right_after_each_progress(tmp_path: Path) -> None:
    """Each progress tick is followed by a checkpoint with the same Progress, in a worker thread (where the
    metrics file is written, off the loop that paces the calls); 3 calls at 2/s take over a second, so with
    10 ms ticks there are some."""

    class Recorder(RunEvents):
        def __init__(self) -> None:
            self.seen: list[tuple[str, Progress, int]] = []

        def progress(self, progress: Progress) -> None:
            self.seen.append(("progress", progress, threading.get_ident()))

        def checkpoint(self, progress: Progress) -> None:
            self.seen.append(("checkpoint", progress, threading.get_ident()))

    events = Recorder()
    with running(EmulatorConfig(qps=1000)) as emu:
        finished = run_manifest(
            load_manifest(_manifest(tmp_path, 3), {}),
            tmp_path / "s.sqlite3",
            emu.url,
            Credentials(AK_ID, AK_SECRET),
            qps=2,
            options=RunOptions(),
            events=events,
            progress_every_s=0.01,
            handle_signals=False,
        )
    assert finished.counts["submitted"] == 3
    pairs = list(zip(events.seen[::2], events.seen[1::2], strict=False))
    assert pairs and all(p[0] == "progress" and c[0] == "checkpoint" for p, c in pairs), events.seen
    assert all(c[1] is p[1] and c[2] != p[2] for p, c in pairs)  # the same look, another thread


def test_labels_are_escaped_so_any_batch_name_parses(tmp_path: Path) -> None:
    """A batch named with a quote, a backslash and a newline still gives a file the parser reads back exactly."""
    name = 'odd "batch" \\ with\nnewline'
    text = render(Snapshot(name, "run", 1.0, reason="ok", exit_code=0, ended_at=2.0, finished_at=2.0))
    batches = {s.labels["batch"] for f in text_string_to_metric_families(text) for s in f.samples}
    assert batches == {name}
    prom = tmp_path / "m.prom"
    prom.write_text(text)
    carried = MetricsFile(prom, "run", log=lambda message: None)
    assert carried.batch == name and carried._finished == {(name, "run"): 2.0}


def _readme_rules() -> Iterator[dict[str, str]]:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(groups:.*?)```", readme, flags=re.S)
    assert blocks, "no Prometheus rule file in the README"
    for block in blocks:
        doc = yaml.safe_load(block)
        for group in doc["groups"]:
            yield from group["rules"]


def test_readme_alert_rules_use_metrics_a_real_run_and_poll_write(cli: CliRunner, tmp_path: Path) -> None:
    """The README's alert rules parse as a Prometheus rule file (groups, rules with alert, expr, labels) and use
    only metric names that real run and poll files hold; the README lists every metric those files hold."""
    path = manifest(tmp_path, 4)
    config = EmulatorConfig(qps=1000, job_seconds=60, callback_drop_rate=1.0)
    with rig(tmp_path, config) as r:
        assert cli("run", str(path), "--endpoint", r.url, "--metrics-file", str(tmp_path / "r.prom"), env=ENV).code == 0
        r.complete_all()
        assert (
            cli("poll", str(path), "--endpoint", r.url, "--metrics-file", str(tmp_path / "p.prom"), env=ENV).code == 0
        )
    names = {
        name
        for prom in ("r.prom", "p.prom")
        for family in text_string_to_metric_families((tmp_path / prom).read_text())
        for name in {family.name, *(s.name for s in family.samples)}
    }
    rules = list(_readme_rules())
    alerts = [rule["alert"] for rule in rules]
    assert "SnapbatchRunDidNotFinish" in alerts and len(alerts) >= 2
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"} and rule["expr"], rule
        used = set(re.findall(r"\bsnapbatch_[a-z_]+", rule["expr"]))
        assert used and used <= names, (rule["alert"], used - names)
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(snapbatch_[a-z_]+)", readme, flags=re.M))
    sample_names = {n for n in names if not n.endswith("_created")}
    families = {n for n in sample_names if f"{n}_total" not in sample_names}
    assert documented == families, documented ^ families


def test_a_max_duration_slice_counts_as_finished(cli: CliRunner, tmp_path: Path) -> None:
    """A nightly `--max-duration` slice that stops with work left (exit 5, reason max-duration) did what cron
    asked: its end is the finish time the "did not finish" alert reads."""
    path = _manifest(tmp_path, 10)
    prom = tmp_path / "run.prom"
    with running(EmulatorConfig(qps=1000)) as emu:  # 10 calls at 1/s cannot all start within a microsecond
        r = cli(
            "run", str(path), "--endpoint", emu.url, "--qps", "1", "--max-duration", "0.000001",
            "--metrics-file", str(prom), env=ENV,
        )  # fmt: skip
    assert r.code == 5, r.err
    m = _metrics(prom)
    assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="max-duration")) == (5, 1)
    assert _get(m, "snapbatch_finished_timestamp_seconds") == _get(m, "snapbatch_end_timestamp_seconds")


@pytest.mark.parametrize("command", ["run", "poll"])
def test_a_manifest_error_still_writes_the_exit(cli: CliRunner, tmp_path: Path, command: str) -> None:
    """An invalid manifest: exit 2 for run and poll, and the file says so (reason usage), labelled with the
    batch the file named before, so the alert on this batch sees the failed night."""
    path = _manifest(tmp_path, 2)
    prom = tmp_path / "m.prom"
    prom.write_text(render(Snapshot("t", command, 1.0, reason="ok", exit_code=0, ended_at=2.0, finished_at=2.0)))
    path.write_text("version: 1\nbatch: t\njobs: nope\n")
    r = cli(command, str(path), "--metrics-file", str(prom), env=ENV)
    assert r.code == 2, r.err
    m = _metrics(prom)
    assert (_get(m, "snapbatch_exit_code"), _get(m, "snapbatch_exit_reason", reason="usage")) == (2, 1)
    assert _labels(prom, "batch") == {"t"} and _get(m, "snapbatch_finished_timestamp_seconds") == 2.0


@pytest.mark.parametrize("command", ["run", "poll"])
def test_a_manifest_error_with_no_earlier_file_is_labelled_by_the_file_name(
    cli: CliRunner, tmp_path: Path, command: str
) -> None:
    """An invalid manifest and no earlier metrics file: the batch label is the file's name without .prom, never
    empty, so two batches failing that way in one collector directory never write the same series."""
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nbatch: t\njobs: nope\n")
    for name in ("nightly-a", "nightly-b"):
        r = cli(command, str(path), "--metrics-file", str(tmp_path / f"{name}.prom"), env=ENV)
        assert r.code == 2, r.err
        assert _labels(tmp_path / f"{name}.prom", "batch") == {name}


PROMTOOL_TESTS = """\
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1h
    input_series:
      # last night's run finished at 01:00 (3600 s after the test's epoch); tonight's is interrupted
      - series: 'snapbatch_finished_timestamp_seconds{batch="catalog-2026-11",command="run"}'
        values: '3600x40'
      - series: 'snapbatch_exit_reason{batch="catalog-2026-11",command="run",reason="interrupted"}'
        values: '1x40'
      - series: 'snapbatch_exit_reason{batch="other",command="run",reason="max-duration"}'
        values: '1x40'
      - series: 'snapbatch_requests{batch="catalog-2026-11",command="run",status="failed"}'
        values: '0 0 3x38'
    alert_rule_test:
      - eval_time: 20h
        alertname: SnapbatchRunDidNotFinish
        exp_alerts: []
      - eval_time: 28h
        alertname: SnapbatchRunDidNotFinish
        exp_alerts:
          - exp_labels: {severity: page, batch: catalog-2026-11, command: run}
            exp_annotations: {summary: "snapbatch catalog-2026-11: no run finished in the last 26 hours"}
      - eval_time: 1h
        alertname: SnapbatchRunEndedBadly
        exp_alerts:
          - exp_labels: {severity: page, batch: catalog-2026-11, command: run, reason: interrupted}
            exp_annotations: {summary: "snapbatch catalog-2026-11: the last run ended with interrupted"}
      - eval_time: 1h
        alertname: SnapbatchRequestsFailed
        exp_alerts: []
      - eval_time: 3h
        alertname: SnapbatchRequestsFailed
        exp_alerts:
          - exp_labels: {severity: ticket, batch: catalog-2026-11, command: run, status: failed}
            exp_annotations:
              summary: "snapbatch catalog-2026-11: 3 requests failed; see snapbatch report --only failed"
  - interval: 1h
    input_series: []  # nothing collected for the batch at all: absent() fires
    alert_rule_test:
      - eval_time: 1h
        alertname: SnapbatchRunDidNotFinish
        exp_alerts:
          - exp_labels: {severity: page, batch: catalog-2026-11, command: run}
            exp_annotations: {summary: "snapbatch catalog-2026-11: no run finished in the last 26 hours"}
"""


def test_readme_alert_rules_pass_promtool(tmp_path: Path) -> None:
    """Prometheus' own promtool accepts the README's rules and, on series shaped as the file writes them, fires
    "did not finish" 27 h after the last finish (not at 19 h, and when nothing is collected), "ended badly" for
    an interrupted run but not a --max-duration slice, and "requests failed" once some are."""
    assert shutil.which("promtool"), "promtool is missing: apt-get install -y prometheus (as .ci/run does)"
    rules = re.findall(r"```yaml\n(groups:.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (tmp_path / "rules.yml").write_text(rules[0])
    (tmp_path / "tests.yml").write_text(PROMTOOL_TESTS)
    for args in (["check", "rules", "rules.yml"], ["test", "rules", "tests.yml"]):
        done = subprocess.run(["promtool", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
