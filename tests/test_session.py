"""The run as a library caller gets it (run_manifest), the rule each outcome kind stands for, and the
one-way imports that keep the emulator independent of the client."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from snapbatch.emulator import EmulatorConfig
from snapbatch.emulator.catalogue import Catalogue
from snapbatch.errors import LockedError
from snapbatch.manifest.load import load_manifest
from snapbatch.models import Outcome, OutcomeKind, RequestStatus
from snapbatch.run.listings import ListingInfo
from snapbatch.run.runner import RunOptions, StopReason
from snapbatch.run.session import RunEvents, run_manifest
from snapbatch.run.state import State
from snapbatch.vod.credentials import Credentials
from tests.conftest import ROOT
from tests.emulated import AK_ID, AK_SECRET, running
from tests.test_exchange_failures import KEEP, scripted
from tests.test_run import _manifest
from tests.test_search import _search_manifest


class _Recorder(RunEvents):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def started(self, recovered: int) -> None:
        self.seen.append(("started", recovered))

    def ingested(self, total: int, new: int) -> None:
        self.seen.append(("ingested", (total, new)))

    def outcome(self, key: str, outcome: Outcome) -> None:
        self.seen.append(("outcome", outcome.kind))

    def listed(self, info: ListingInfo, fresh: bool) -> None:
        self.seen.append(("listed", (info.job, info.listed, fresh)))

    def pacing(self, quota: str, margin_s: float | None) -> None:
        self.seen.append(("pacing", quota))


def test_a_library_caller_gets_the_whole_run(tmp_path: Path) -> None:
    """run_manifest locks, ingests, sends and records as `snapbatch run` does, and reports through the
    events object: started, the ingest, every outcome; nothing printed."""
    manifest = load_manifest(_manifest(tmp_path, 6), {})
    known = {f"video-{i:05d}": None for i in range(5)}
    events = _Recorder()
    with running(EmulatorConfig(qps=1000, videos=known)) as emu:
        finished = run_manifest(
            manifest,
            tmp_path / "s.sqlite3",
            emu.url,
            Credentials(AK_ID, AK_SECRET),
            qps=200,
            options=RunOptions(),
            events=events,
            handle_signals=False,
        )
    assert finished.result.submitted == 5 and finished.result.failed == 1 and finished.result.stop_reason is None
    assert (finished.counts["submitted"], finished.counts["failed"], finished.counts["sending"]) == (5, 1, 0)
    assert events.seen[0] == ("started", 0)
    assert ("ingested", (6, 6)) in events.seen
    kinds = [what for name, what in events.seen if name == "outcome"]
    assert sorted(kinds) == sorted([OutcomeKind.ACCEPTED] * 5 + [OutcomeKind.FAILED])


def test_a_run_puts_the_callers_signal_handlers_back(tmp_path: Path) -> None:
    """A run that handles SIGINT and SIGTERM itself leaves the caller's handlers as they were when it ends:
    asyncio leaves SIG_DFL behind, under which a SIGTERM between the end of the run and the exit killed
    `snapbatch run` before its summary and the metrics file's last write."""
    assert threading.current_thread() is threading.main_thread()  # elsewhere a run handles no signal at all

    def caller_handler(signum: int, frame: object) -> None:
        raise AssertionError("no signal is sent in this test")

    before = signal.signal(signal.SIGTERM, caller_handler)
    interrupt_before = signal.getsignal(signal.SIGINT)
    try:
        with running(EmulatorConfig(qps=1000)) as emu:
            finished = run_manifest(
                load_manifest(_manifest(tmp_path, 3), {}),
                tmp_path / "s.sqlite3",
                emu.url,
                Credentials(AK_ID, AK_SECRET),
                qps=200,
                options=RunOptions(),
                handle_signals=True,
            )
        assert finished.result.calls == 3  # the run went through, with its own handlers installed meanwhile
        assert signal.getsignal(signal.SIGTERM) is caller_handler
        assert signal.getsignal(signal.SIGINT) is interrupt_before
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_library_caller_gets_search_listings_and_a_wrong_endpoint_stop(tmp_path: Path) -> None:
    """A search job is listed before sending and reported through ``listed`` (fresh, then frozen on the next
    run); nothing paces shared by default; an endpoint that answers with a redirect stops the run as
    WRONG_ENDPOINT with the requests left pending and nothing recorded as sent."""
    catalogue = Catalogue()
    for i in range(3):
        catalogue.add({"VideoId": f"found{i:027d}", "CateId": 7, "CreationTime": "2026-01-01T00:00:00Z"})
    manifest = load_manifest(_search_manifest(tmp_path, "CateId = 7", ["listed-video-1"]), {})
    state_path = tmp_path / "s.sqlite3"
    events = [_Recorder(), _Recorder()]
    with running(EmulatorConfig(qps=1000, catalogue=catalogue)) as emu:
        for recorder in events:
            finished = run_manifest(
                manifest,
                state_path,
                emu.url,
                Credentials(AK_ID, AK_SECRET),
                qps=200,
                options=RunOptions(),
                events=recorder,
                handle_signals=False,
            )
            assert finished.result.stop_reason is None and finished.unfinished_listings == ()
    assert ("listed", ("found", 3, True)) in events[0].seen and ("listed", ("found", 3, False)) in events[1].seen
    assert not any(name == "pacing" for recorder in events for name, _ in recorder.seen)
    assert finished.counts["submitted"] == 4

    manifest = load_manifest(_manifest(tmp_path, 2), {})
    moved = b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://vod.elsewhere.example/\r\nContent-Length: 0\r\n\r\n"
    with scripted(moved, KEEP) as served:
        finished = run_manifest(
            manifest,
            tmp_path / "r.sqlite3",
            served.url,
            Credentials(AK_ID, AK_SECRET),
            qps=10,
            options=RunOptions(),
            handle_signals=False,
        )
    assert finished.result.stop_reason == StopReason.WRONG_ENDPOINT
    assert finished.result.last_error is not None and finished.result.last_error.kind == OutcomeKind.WRONG_ENDPOINT
    assert (finished.counts["pending"], finished.counts["sending"], finished.counts["submitted"]) == (2, 0, 0)


def test_a_locked_state_raises_locked_error(tmp_path: Path) -> None:
    """Another run holds the state: run_manifest raises LockedError before sending anything."""
    manifest = load_manifest(_manifest(tmp_path, 2), {})
    holder = State(tmp_path / "s.sqlite3")
    holder.lock(0.0)
    try:
        with running() as emu, pytest.raises(LockedError):
            run_manifest(
                manifest, tmp_path / "s.sqlite3", emu.url, Credentials(AK_ID, AK_SECRET), qps=10, options=RunOptions()
            )
        assert emu.emulator.calls == []
    finally:
        holder.close()


def test_each_outcome_kind_stands_for_one_rule() -> None:
    """The whole retry rule, in one table: which kinds are sent again (and after a backoff), which prove the
    key works, which count toward an outage, and the status each leaves; the stored values never change."""
    table = {
        # kind: (value, retryable, backs_off, proves_credentials, counts_toward_outage, status)
        OutcomeKind.ACCEPTED: ("accepted", False, False, True, False, RequestStatus.SUBMITTED),
        OutcomeKind.THROTTLED: ("throttled", True, True, True, False, RequestStatus.PENDING),
        OutcomeKind.TRANSIENT: ("transient", True, True, False, True, RequestStatus.PENDING),
        OutcomeKind.IN_DOUBT: ("in_doubt", True, True, False, True, RequestStatus.IN_DOUBT),
        OutcomeKind.FAILED: ("failed", False, False, True, False, RequestStatus.FAILED),
        OutcomeKind.FATAL: ("fatal", False, False, False, False, RequestStatus.PENDING),
        OutcomeKind.EXPIRED: ("expired", True, False, False, False, RequestStatus.PENDING),
        OutcomeKind.WRONG_ENDPOINT: ("wrong_endpoint", False, False, False, False, RequestStatus.PENDING),
    }
    assert set(table) == set(OutcomeKind)
    for kind, row in table.items():
        rules = (kind.retryable, kind.backs_off, kind.proves_credentials, kind.counts_toward_outage, kind.status)
        assert (kind.value, *rules) == row, kind
    assert [s.value for s in RequestStatus] == ["pending", "sending", "submitted", "failed", "in_doubt"]
    assert {r.value for r in StopReason} == {
        "fatal",
        "max-requests",
        "max-duration",
        "retry-budget",
        "outage",
        "unreachable",
        "wrong-endpoint",
        "interrupted",
        "quota",
    }


def _snapbatch_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("snapbatch"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("snapbatch")}
    return found


def test_the_emulator_depends_only_on_signing_and_the_api_facts() -> None:
    """The emulator imports nothing of snapbatch but vod.signing and vod.api (so it follows the documented
    service, not the client), and vod.api imports nothing of snapbatch at all."""
    package = ROOT / "snapbatch"
    for path in (package / "emulator").glob("*.py"):
        outside = {m for m in _snapbatch_imports(path) if not m.startswith("snapbatch.emulator")}
        assert outside <= {"snapbatch.vod.signing", "snapbatch.vod.api"}, (path, outside)
    assert _snapbatch_imports(package / "vod" / "api.py") == set()
    assert _snapbatch_imports(package / "vod" / "signing.py") == {"snapbatch.vod.api"}


_TEARDOWN_SIGTERM = """
import os, signal, sys
from pathlib import Path
from snapbatch.emulator import EmulatorConfig
from snapbatch.manifest.load import load_manifest
from snapbatch.run.quota import HostFileStore, Pacing
from snapbatch.run.runner import RunOptions
from snapbatch.run.session import run_manifest
from snapbatch.run.state import State
from snapbatch.vod.credentials import Credentials
from tests.emulated import AK_ID, AK_SECRET, running
from tests.test_run import _manifest

tmp = Path(sys.argv[1])
close = HostFileStore.aclose

async def aclose_then_sigterm(self):  # the run's last act in its event loop, its signal receiver long closed
    await close(self)
    os.kill(os.getpid(), signal.SIGTERM)

HostFileStore.aclose = aclose_then_sigterm

def caller(signum, frame):
    raise KeyboardInterrupt

signal.signal(signal.SIGTERM, caller)
try:
    with running(EmulatorConfig(qps=1000)) as emu:
        run_manifest(
            load_manifest(_manifest(tmp, 3), {}), tmp / "s.sqlite3", emu.url, Credentials(AK_ID, AK_SECRET),
            qps=200, options=RunOptions(), pacing=Pacing("local", tmp / "cache"), handle_signals=True,
        )
    print("run returned", flush=True)
except KeyboardInterrupt:
    print("the caller's handler", flush=True)
state = State(tmp / "s.sqlite3")
state.lock(0.0)  # the run let go of its state on the way out
print(sum(state.counts().values()), "requests", flush=True)
"""


def test_a_sigterm_while_the_run_tears_down_goes_to_the_callers_handler(tmp_path: Path) -> None:
    """A SIGTERM after the run's signal receiver has closed but before its event loop has ended (closing the
    shared quota's store, a last progress write) goes to the caller's handler, the run's state closed: asyncio
    left SIG_DFL there, so it killed `snapbatch run` before its summary and the metrics file's last write."""
    done = subprocess.run(
        [sys.executable, "-c", _TEARDOWN_SIGTERM, str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.splitlines() == ["the caller's handler", "3 requests"], done.stderr
