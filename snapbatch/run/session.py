"""One whole run of a batch, as `snapbatch run` does it, for any caller: lock the state, recover what a
killed run left in flight, read the manifest into the state while sending (the ingest runs in a thread),
stop cleanly on SIGINT/SIGTERM, and tell the caller how it goes through a ``RunEvents`` object.

Nothing here prints: the CLI's RunEvents turns the events into lines (report.py has the words).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import anyio

from snapbatch.errors import SnapbatchError
from snapbatch.manifest.expand import expand, fingerprint
from snapbatch.models import Manifest, Outcome, OutcomeKind
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.runner import RunOptions, RunResult, run_batch
from snapbatch.run.state import State
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.providers import CredentialsProvider

__all__ = ["Finished", "Progress", "RunEvents", "Tally", "run_manifest"]

# The state writer and the ingest run in threads; a shorter GIL switch interval keeps them from delaying a
# due call by up to the default 5 ms, which would eat the limiter's 6 ms margin.
SWITCH_INTERVAL_S = 0.0005


@dataclass
class Tally:
    """What this run's answers were so far (the state's counts include earlier runs)."""

    submitted: int = 0
    throttled: int = 0
    failed: int = 0
    errors: int = 0  # 5xx, no connection or a lost answer
    last_error: Outcome | None = None  # the latest of those errors

    def add(self, outcome: Outcome) -> None:
        kind = outcome.kind
        if kind == OutcomeKind.ACCEPTED:
            self.submitted += 1
        elif kind == OutcomeKind.THROTTLED:
            self.throttled += 1
        elif kind == OutcomeKind.FAILED:
            self.failed += 1
        elif kind.counts_toward_outage:
            self.errors += 1
            self.last_error = outcome


@dataclass(frozen=True)
class Progress:
    """A look at a run under way: the state's counts by status, this run's tally, the time it has run."""

    counts: dict[str, int]
    tally: Tally
    elapsed_s: float
    resend_in_doubt: bool  # in-doubt requests are work left
    ingesting: bool  # the manifest is still going into the state: the total will grow


class RunEvents:
    """What a run tells its caller as it goes. Every method does nothing here: override those you need.
    They are called on the run's event loop, so they should return quickly."""

    def started(self, recovered: int) -> None:
        """The state is locked and about to be worked on; ``recovered`` requests a killed run left in flight
        are now in doubt."""

    def ingested(self, total: int, new: int) -> None:
        """The manifest is in the state: ``total`` requests, ``new`` of them not there before."""

    def outcome(self, key: str, outcome: Outcome) -> None:
        """An attempt for request ``key`` came back."""

    def progress(self, progress: Progress) -> None:
        """Every ``progress_every_s`` while the run goes."""

    def stopping(self, signal_name: str) -> None:
        """A signal (SIGINT, SIGTERM) asked the run to stop: no new calls start."""


@dataclass(frozen=True)
class Finished:
    """How a run ended: the runner's result and the state's counts by status afterwards."""

    result: RunResult
    counts: dict[str, int] = field(default_factory=dict)


def run_manifest(
    manifest: Manifest,
    state_path: Path,
    endpoint: str,
    credentials: Credentials | CredentialsProvider,
    *,
    qps: float,
    options: RunOptions,
    events: RunEvents | None = None,
    progress_every_s: float = 10.0,
    lean_transport: bool = True,
    handle_signals: bool = True,
    prepare: Callable[[State], None] | None = None,
) -> Finished:
    """Send ``manifest``'s requests that ``state_path`` does not record as done, at most ``qps`` calls a
    second, until done or stopped. Raises LockedError when another run holds the state, StateError when it
    cannot be used. ``credentials``: a fixed key, or a provider (vod.providers) that renews STS credentials
    ahead of expiry while the run goes. ``lean_transport=False`` uses httpx's own transport (which honours
    proxy variables). With ``handle_signals`` (and in the main thread), SIGINT and SIGTERM stop the run
    cleanly. ``prepare(state)`` runs on the locked, recovered state before anything is sent (the CLI brings
    the receiver's completion events in there)."""
    events = events or RunEvents()
    state = State(state_path)
    try:
        state.lock(time.time())
        recovered = state.recover()
        if prepare is not None:
            prepare(state)
        events.started(recovered)
        try:
            with _switch_interval(SWITCH_INTERVAL_S):
                session = partial(_Session, state, manifest, endpoint, credentials, qps, options, events)
                result = anyio.run(_run, session, progress_every_s, lean_transport, handle_signals)
        except BaseExceptionGroup as group:  # a StateError from the writer or the ingest, say
            raise _first_snapbatch_error(group) from None
        state.recover()  # anything cut off by an interrupt is in doubt, not "sending"
        return Finished(result, state.counts())
    finally:
        state.close()


@contextmanager
def _switch_interval(seconds: float) -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _first_snapbatch_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_snapbatch_error(exc)
        if isinstance(exc, SnapbatchError):
            return exc
    return group


@dataclass
class _Session:
    state: State
    manifest: Manifest
    endpoint: str
    credentials: Credentials | CredentialsProvider
    qps: float
    options: RunOptions
    events: RunEvents
    tally: Tally = field(default_factory=Tally)
    ingested: anyio.Event = field(default_factory=anyio.Event)
    abandon: threading.Event = field(default_factory=threading.Event)

    async def ingest(self) -> None:
        fp = await anyio.to_thread.run_sync(fingerprint, self.manifest)
        if self.state.needs_ingest(fp):
            requests = expand(self.manifest, fold_duplicates=False)
            total, new = await anyio.to_thread.run_sync(
                self.state.ingest, requests, fp, self.manifest.batch, self.abandon
            )
            if not self.abandon.is_set():
                self.events.ingested(total, new)
        self.ingested.set()

    def outcome(self, key: str, outcome: Outcome) -> None:
        self.tally.add(outcome)
        self.events.outcome(key, outcome)

    async def progress(self, every_s: float, clock: Callable[[], float]) -> None:
        started = clock()
        while True:
            await anyio.sleep(every_s)
            counts = await anyio.to_thread.run_sync(self.state.counts)
            self.events.progress(
                Progress(
                    counts,
                    replace(self.tally),
                    clock() - started,
                    self.options.in_doubt == "resend",
                    ingesting=not self.ingested.is_set(),
                )
            )

    async def signals(self, stop: anyio.Event) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for signum in received:
                self.events.stopping(signal.Signals(signum).name)
                stop.set()
                return


async def _run(
    make_session: Callable[[], _Session], progress_every_s: float, lean_transport: bool, handle_signals: bool
) -> RunResult:
    session = make_session()  # in the event loop: it holds anyio events
    stop = anyio.Event()
    limiter = Limiter(RateWindow(session.qps))
    async with (
        VodClient(
            session.endpoint,
            session.credentials,
            max_connections=session.options.concurrency,
            lean=lean_transport,
        ) as client,
        anyio.create_task_group() as tg,
    ):
        if handle_signals and threading.current_thread() is threading.main_thread():
            tg.start_soon(session.signals, stop)
        tg.start_soon(session.progress, progress_every_s, time.monotonic)
        tg.start_soon(session.ingest)
        if not isinstance(session.credentials, Credentials):
            tg.start_soon(session.credentials.keep_fresh)  # renews STS credentials ahead of expiry, off the calls' path
        result = await run_batch(
            session.state,
            client,
            limiter,
            session.options,
            on_outcome=session.outcome,
            stop=stop,
            more_coming=lambda: not session.ingested.is_set(),
        )
        session.abandon.set()  # an unfinished ingest commits as it goes and is redone next time
        tg.cancel_scope.cancel()
    return result
