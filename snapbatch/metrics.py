"""The metrics file (`run --metrics-file`, `poll --metrics-file`): where a run or a poll stands, in Prometheus'
text exposition format, for node_exporter's textfile collector.

The file is written when the command starts, with its progress (at most every ``EVERY_S``) and when it exits,
however it exits; the last write names the exit reason. Each write goes to a temporary file beside it (a name
the collector skips), is synced, given mode 0644 and renamed over the file, so a scrape never sees half of one.
Every sample is labelled with the batch and the command (run or poll), so one file per batch and command can
share the collector's directory. Nothing secret goes in, nor the AccessKeyId. The README lists every metric.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from snapbatch.completion.poller import PollResult
from snapbatch.errors import SnapbatchError, UsageError
from snapbatch.files import write_atomically
from snapbatch.models import Outcome, OutcomeKind, RequestStatus
from snapbatch.run.session import Progress
from snapbatch.run.state import State

__all__ = [
    "EVERY_S",
    "FINISHED_REASONS",
    "SUFFIX",
    "MetricsFile",
    "Snapshot",
    "check_path",
    "render",
]

SUFFIX = ".prom"  # the only files node_exporter's textfile collector reads
EVERY_S = 10.0  # at most this often while the command goes: a scrape every 15-60 s gains nothing from more
# Exit reasons of a command that ended by itself, having done what it was asked (a --max-duration slice from
# cron included); "last night's run did not finish" is the absence of one of these.
FINISHED_REASONS = frozenset({"ok", "failed", "max-requests", "max-duration", "open-jobs", "timeout"})
_REASONS = {0: "ok", 1: "failed", 2: "usage", 3: "locked", 4: "fatal", 5: "stopped", 6: "state", 130: "interrupted"}
_COMPLETIONS = ("completed", "failed", "processing", "unknown")
_MAX_PREVIOUS_BYTES = 1 << 20
_FINISHED_LINE = re.compile(
    r'^snapbatch_finished_timestamp_seconds\{batch="((?:[^"\\]|\\.)*)",command="([a-z]+)"\} (\S+)$', re.M
)
_BATCH_LABEL = re.compile(r'^snapbatch_\w+\{batch="((?:[^"\\]|\\.)*)",command="([a-z]+)"', re.M)


@dataclass
class Snapshot:
    """What one write of the file says. None: not known (then the metric is left out, not written as 0)."""

    batch: str
    command: str  # "run" or "poll"
    started_at: float
    reason: str = "running"
    exit_code: int | None = None
    ended_at: float | None = None
    finished_at: float | None = None  # the latest end by itself (FINISHED_REASONS) of this command on this batch
    requests: Mapping[str, int] | None = None  # the state's requests by status
    jobs: Mapping[str, int] | None = None  # submitted requests by what became of their job (poll)
    calls: Mapping[str, int] | None = None  # run: this run's SubmitSnapshotJob answers by outcome kind
    retries: int | None = None
    accepted_per_s: float | None = None
    limit_per_s: float | None = None
    last_accepted_at: float | None = None
    last_completed_at: float | None = None
    answers: Mapping[str, int] | None = None  # poll: this poll's GetJobDetail answers
    passes: int | None = None


@dataclass(frozen=True)
class _Family:
    name: str
    kind: str  # gauge or counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def render(snap: Snapshot) -> str:
    """The exposition text of ``snap``: HELP and TYPE lines, then its samples, every one labelled with the batch
    and the command; no timestamps (the textfile collector refuses them)."""
    families = [
        _Family(
            "snapbatch_requests",
            "gauge",
            "Requests of the batch in the state file, by status.",
            [({"status": k}, v) for k, v in snap.requests.items()] if snap.requests is not None else [],
        ),
        _Family(
            "snapbatch_jobs",
            "gauge",
            "Submitted requests of the batch by what became of their job (unknown: nothing heard yet).",
            [({"completion": k}, snap.jobs[k]) for k in _COMPLETIONS] if snap.jobs is not None else [],
        ),
        _Family(
            "snapbatch_calls_total",
            "counter",
            "SubmitSnapshotJob answers in this run, by outcome.",
            [({"outcome": k}, v) for k, v in snap.calls.items()] if snap.calls is not None else [],
        ),
        _Family(
            "snapbatch_job_details_total",
            "counter",
            "GetJobDetail answers in this poll, by answer.",
            [({"answer": k}, v) for k, v in snap.answers.items()] if snap.answers is not None else [],
        ),
        _Family("snapbatch_retries_total", "counter", "Requests put back to be sent again in this run.", []),
        _Family("snapbatch_poll_passes_total", "counter", "Passes over the open jobs in this poll.", []),
        _Family(
            "snapbatch_accepted_per_second",
            "gauge",
            "Calls accepted per second over this run, from its start to now (or to its end).",
        ),
        _Family("snapbatch_limit_per_second", "gauge", "The calls per second this command was allowed."),
        _Family(
            "snapbatch_last_accepted_timestamp_seconds",
            "gauge",
            "Unix time at which the service last accepted a request of this batch (any run).",
        ),
        _Family(
            "snapbatch_last_completed_timestamp_seconds",
            "gauge",
            "Unix time at which the latest job of this batch completed or failed.",
        ),
        _Family("snapbatch_start_timestamp_seconds", "gauge", "Unix time at which this command started."),
        _Family(
            "snapbatch_end_timestamp_seconds", "gauge", "Unix time at which this command ended (absent while it goes)."
        ),
        _Family(
            "snapbatch_finished_timestamp_seconds",
            "gauge",
            "Unix time at which this command last ended by itself on this batch (exit reason ok, failed, "
            "max-requests, max-duration, open-jobs or timeout); kept from the file's previous content until then.",
        ),
        _Family("snapbatch_exit_code", "gauge", "The exit code of this command (absent while it goes)."),
        _Family(
            "snapbatch_exit_reason",
            "gauge",
            "1 for why this command ended, or running while it goes.",
            [({"reason": snap.reason}, 1)],
        ),
    ]
    singles = {
        "snapbatch_retries_total": snap.retries,
        "snapbatch_poll_passes_total": snap.passes,
        "snapbatch_accepted_per_second": snap.accepted_per_s,
        "snapbatch_limit_per_second": snap.limit_per_s,
        "snapbatch_last_accepted_timestamp_seconds": snap.last_accepted_at,
        "snapbatch_last_completed_timestamp_seconds": snap.last_completed_at,
        "snapbatch_start_timestamp_seconds": snap.started_at,
        "snapbatch_end_timestamp_seconds": snap.ended_at,
        "snapbatch_finished_timestamp_seconds": snap.finished_at,
        "snapbatch_exit_code": snap.exit_code,
    }
    lines: list[str] = []
    for family in families:
        value = singles.get(family.name)
        one = family.samples if value is None else [({}, value)]
        if not one:
            continue
        lines += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
        for extra, sample in one:
            labels = {"batch": snap.batch, "command": snap.command, **extra}
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{family.name}{{{text}}} {_number(sample)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return repr(float(value))


def check_path(path: Path) -> None:
    """UsageError unless a metrics file can be written at ``path``: its name ends in .prom (the textfile
    collector reads nothing else) and a file can be made in its directory (tried, not guessed)."""
    if not path.name.endswith(SUFFIX) or path.name == SUFFIX:
        raise UsageError(
            f"--metrics-file {path}: the name must end in {SUFFIX}, because node_exporter's textfile collector "
            f"reads no other files; give a name like {path.stem or 'snapbatch'}{SUFFIX}"
        )
    if path.is_dir():
        raise UsageError(f"--metrics-file {path} is a directory; give a file name ending in {SUFFIX} inside it")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(
            f"--metrics-file {path}: the directory {parent} does not exist; create it (node_exporter's "
            "--collector.textfile.directory) or give another path"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(
            f"--metrics-file {path}: cannot write in {parent} ({exc.strerror or exc}); give a directory this user "
            "may write in, or fix its permissions"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _previous(path: Path) -> tuple[dict[tuple[str, str], float], str | None]:
    """From the file's previous content (if it is one snapbatch wrote): when each (batch, command) last
    finished, and the batch it was about."""
    try:
        with path.open("rb") as file:
            text = file.read(_MAX_PREVIOUS_BYTES).decode("utf-8", "replace")
    except OSError:
        return {}, None
    finished: dict[tuple[str, str], float] = {}
    for batch, command, value in _FINISHED_LINE.findall(text):
        with contextlib.suppress(ValueError):
            finished[(_unescape(batch), command)] = float(value)
    first = _BATCH_LABEL.search(text)
    return finished, _unescape(first.group(1)) if first else None


class MetricsFile:
    """The metrics file of one command: what it has seen so far, and the writes. ``check_path`` runs first
    (UsageError: nothing is sent). Writes that fail while the command goes are logged, once, and do not stop
    it: the metrics serve the batch, not the other way round."""

    def __init__(
        self,
        path: Path,
        command: str,
        *,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        check_path(path)
        self.path, self.command, self.log, self.clock, self.monotonic = path, command, log, clock, monotonic
        self.started_at = clock()
        self._finished, previous_batch = _previous(path)
        # until the manifest names it (a manifest that cannot be read never does): the file's earlier batch, else
        # the file's own name, unique in the collector's directory, so two such files never write one series
        self.batch = previous_batch or path.stem
        self.state_path: Path | None = None
        self.limit_per_s: float | None = None
        self.stop_reason: str | None = None  # for exit 5: what stopped the command (a StopReason's value, say)
        self.calls = {kind.value: 0 for kind in OutcomeKind}
        self.retries = 0
        self.last_accepted_at: float | None = None
        self.began: float | None = None  # monotonic: when sending could start (the rate's start)
        self.poll: PollResult | None = None
        self._last_write = -math.inf
        self._failing = False
        self._lock = threading.Lock()  # a write from the progress thread never interleaves with the last one

    # -- what the command tells it -----------------------------------------------------------------

    def for_batch(self, batch: str, state_path: Path, limit_per_s: float) -> None:
        """The manifest is read: its batch, its state file and the rate the command may call at."""
        self.batch, self.state_path, self.limit_per_s = batch, state_path, limit_per_s

    def record(self, outcome: Outcome) -> None:
        """A SubmitSnapshotJob answer came back (on the run's event loop: just counting)."""
        self.calls[outcome.kind.value] += 1
        if outcome.kind == OutcomeKind.ACCEPTED:
            self.last_accepted_at = self.clock()

    def started(self, state: State) -> None:
        """The command has its state (locked, recovered, events absorbed): the first write, before any call."""
        self.began = self.monotonic()
        requests, jobs, accepted, completed = _read(state, self.command)
        self.last_accepted_at = accepted
        self._write(self._snapshot(requests=requests, jobs=jobs, last_completed_at=completed))

    def progress(self, progress: Progress) -> None:
        """A run's progress tick (in a worker thread): a write, unless the last one is under EVERY_S old."""
        self.retries = progress.retries
        if self.monotonic() - self._last_write >= EVERY_S:
            self._write(self._snapshot(requests=progress.counts))

    def poll_progress(self, state: State) -> None:
        """A poll's tick (in a worker thread): the state's counts now, and the answers so far."""
        if self.monotonic() - self._last_write >= EVERY_S:
            try:
                requests, jobs, _, completed = _read(state, self.command)
            except (SnapbatchError, sqlite3.Error):  # the poll itself meets and reports what is wrong
                return
            self._write(self._snapshot(requests=requests, jobs=jobs, last_completed_at=completed))

    def stopped(self, reason: str) -> None:
        """Why the command stops with work left (exit 5): the word the final write gives as its reason."""
        self.stop_reason = reason

    def finish(self, code: int | None) -> None:
        """The command's exit (None: an unexpected error, shown as its traceback): the last write, with the
        state's counts read afresh where there is a state of this batch to read."""
        reason = "crashed" if code is None else _REASONS.get(code, "error")
        if code == 5 and self.stop_reason:
            reason = self.stop_reason
        ended = self.clock()
        if reason in FINISHED_REASONS:
            self._finished[(self.batch, self.command)] = ended
        requests, jobs, accepted, completed = self._read_state()
        if accepted is not None:
            self.last_accepted_at = accepted
        snap = self._snapshot(requests=requests, jobs=jobs, last_completed_at=completed, reason=reason, ended_at=ended)
        snap.exit_code = 1 if code is None else code
        self._write(snap, final=True)

    # -- writing -----------------------------------------------------------------------------------

    def _snapshot(
        self,
        *,
        requests: Mapping[str, int] | None,
        jobs: Mapping[str, int] | None = None,
        last_completed_at: float | None = None,
        reason: str = "running",
        ended_at: float | None = None,
    ) -> Snapshot:
        snap = Snapshot(
            self.batch,
            self.command,
            self.started_at,
            reason=reason,
            ended_at=ended_at,
            finished_at=self._finished.get((self.batch, self.command)),
            requests=requests,
            jobs=jobs if self.command == "poll" else None,
            limit_per_s=self.limit_per_s,
            last_completed_at=last_completed_at if self.command == "poll" else None,
        )
        if self.command == "run":
            snap.calls = dict(self.calls)
            snap.retries = self.retries
            snap.last_accepted_at = self.last_accepted_at
            if self.began is not None:
                elapsed = self.monotonic() - self.began
                snap.accepted_per_s = self.calls[OutcomeKind.ACCEPTED.value] / elapsed if elapsed > 0 else 0.0
        elif self.poll is not None:
            p = self.poll
            snap.answers = {
                "success": p.completed,
                "fail": p.failed,
                "processing": p.processing,
                "not_found": p.unknown,
                "throttled": p.throttled,
                "error": p.errors,
            }
            snap.passes = p.passes
        return snap

    def _read_state(self) -> tuple[dict[str, int] | None, dict[str, int] | None, float | None, float | None]:
        """The state's counts at the command's end, when there is a state file of this batch to read."""
        if self.state_path is None or not self.state_path.is_file():
            return None, None, None, None
        try:
            state = State(self.state_path, create=False)
        except SnapbatchError:
            return None, None, None, None
        try:
            state.check_batch(self.batch)
            return _read(state, self.command)
        except (SnapbatchError, sqlite3.Error):  # another batch's, or unreadable: no counts rather than wrong ones
            return None, None, None, None
        finally:
            state.close()

    def _write(self, snap: Snapshot, *, final: bool = False) -> None:
        with self._lock:
            self._last_write = self.monotonic()
            try:
                write_atomically(self.path, render(snap))
            except OSError as exc:
                if final or not self._failing:
                    self.log(
                        f"cannot write the metrics file {self.path}: {exc.strerror or exc}"
                        + ("" if final else "; the batch goes on, and the next write tries again")
                    )
                self._failing = True
                return
            if self._failing:
                self.log(f"the metrics file {self.path} is written again")
            self._failing = False


def _read(state: State, command: str) -> tuple[dict[str, int], dict[str, int] | None, float | None, float | None]:
    """Requests by status; for a run the last accepted call's time, for a poll jobs by completion and the
    latest completion's time (each of those reads every request: only what the command's file shows)."""
    counts = state.counts()
    requests = {s.value: counts[s.value] for s in RequestStatus} | {"not_in_manifest": counts["not_in_manifest"]}
    if command == "run":
        return requests, None, state.last_submitted_at(), None
    completion = state.completion_counts()
    latest = completion["last_completed_at"]
    return requests, {k: int(completion[k]) for k in _COMPLETIONS}, None, None if latest is None else float(latest)
