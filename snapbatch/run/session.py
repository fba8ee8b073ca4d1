"""One whole run of a batch, as `snapbatch run` does it, for any caller: lock the state, recover what a
killed run left in flight, list the search jobs (or find their lists frozen), read the manifest into the
state while sending (the ingest runs in a thread), pace with the key's quota (alone, shared on this host or
through Redis, with the margin earlier runs learned), stop cleanly on SIGINT/SIGTERM, and tell the caller how
it goes through a ``RunEvents`` object.

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
from snapbatch.manifest.expand import Listings, expand, fingerprint, search_jobs
from snapbatch.models import Manifest, Outcome, OutcomeKind
from snapbatch.run.limiter import DEFAULT_MARGIN_S, Limiter, RateWindow
from snapbatch.run.listings import SEARCH_QPS, ListingInfo, ListingStore, freeze_all
from snapbatch.run.margin import MarginStore
from snapbatch.run.quota import Pacing, open_limiter
from snapbatch.run.runner import RunOptions, RunResult, run_batch
from snapbatch.run.state import State
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.providers import CredentialsProvider

__all__ = ["Finished", "Progress", "RunEvents", "Tally", "account_key", "kept_signal_handlers", "run_manifest"]

# The state writer and the ingest run in threads; a shorter GIL switch interval keeps them from delaying a
# due call by up to the default 5 ms, which would eat into the limiter's margin.
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
    listing: ListingInfo | None = None  # a search job being listed (its page last committed); nothing sent yet
    paused: bool = False  # the shared quota cannot be reached: nothing is sent until it can
    retries: int = 0  # requests this run has put back to be sent again so far


class RunEvents:
    """What a run tells its caller as it goes. Every method does nothing here: override those you need.
    They are called on the run's event loop, so they should return quickly."""

    def started(self, recovered: int) -> None:
        """The state is locked and about to be worked on; ``recovered`` requests a killed run left in flight
        are now in doubt."""

    def pacing(self, quota: str, margin_s: float | None) -> None:
        """How the run paces: ``quota`` is "off" (alone), "local" (shared with the runs on this host) or the
        shared store's URL; ``margin_s`` is the margin earlier runs on this key learned from throttles, when
        it is wider than the default."""

    def quota_paused(self, problem: str, outage_s: float) -> None:
        """The shared quota cannot be reached: nothing is sent until it can, for at most ``outage_s``."""

    def quota_back(self, after_s: float) -> None:
        """The shared quota is reachable again after ``after_s``: sending goes on."""

    def listed(self, info: ListingInfo, fresh: bool) -> None:
        """A search job's list is in the state: ``fresh`` when listed now, else found frozen there."""

    def ingested(self, total: int, new: int) -> None:
        """The manifest is in the state: ``total`` requests, ``new`` of them not there before."""

    def outcome(self, key: str, outcome: Outcome) -> None:
        """An attempt for request ``key`` came back."""

    def progress(self, progress: Progress) -> None:
        """Every ``progress_every_s`` while the run goes."""

    def checkpoint(self, progress: Progress) -> None:
        """Right after each ``progress``, in a worker thread: for slower work (writing a file) that must not
        hold up the event loop, and so the calls' pacing."""

    def stopping(self, signal_name: str, drain_s: float) -> None:
        """A signal (SIGINT, SIGTERM) asked the run to stop: no new calls start; those in flight get
        ``drain_s`` to finish."""

    def abandoning(self, signal_name: str) -> None:
        """A second signal: the run stops at once; the calls in flight are left in doubt."""


@dataclass(frozen=True)
class Finished:
    """How a run ended: the runner's result and the state's counts by status afterwards."""

    result: RunResult
    counts: dict[str, int] = field(default_factory=dict)
    # search jobs whose listing was cut short (a stop, Ctrl-C): work is left even with nothing pending
    unfinished_listings: tuple[str, ...] = ()


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
    pacing: Pacing | None = None,
    relist: bool = False,
    search_qps: float = SEARCH_QPS,
    handle_signals: bool = True,
    prepare: Callable[[State], None] | None = None,
) -> Finished:
    """Send ``manifest``'s requests that ``state_path`` does not record as done, at most ``qps`` calls a
    second, until done or stopped. Raises LockedError when another run holds the state, StateError when it
    cannot be used (another batch's, or deleted or replaced while the run goes), ListingError when a search
    job cannot be listed. ``credentials``: a fixed key, or a provider (vod.providers) that renews STS
    credentials ahead of expiry while the run goes. ``pacing``: how the key's quota is shared and where
    learned margins are kept (default: this run alone, nothing kept). Search jobs are listed through
    SearchMedia at ``search_qps`` unless their lists are frozen in the state (``relist`` lists them again).
    With ``handle_signals`` (and in the main thread), SIGINT and SIGTERM stop the run cleanly (a second one
    at once). ``prepare(state)`` runs on the locked, recovered state before anything is sent (the CLI
    brings the receiver's completion events in there)."""
    events = events or RunEvents()
    pacing = pacing or Pacing("off")
    state = State(state_path)
    try:
        state.lock(time.time())
        state.check_batch(manifest.batch)
        state.set_meta({"qps": str(qps)})  # the limit `report --html` draws the accepted calls against
        recovered = state.recover()
        if prepare is not None:
            prepare(state)
        events.started(recovered)
        try:
            with _switch_interval(SWITCH_INTERVAL_S), kept_signal_handlers(handle_signals):
                session = partial(
                    _Session, state, manifest, endpoint, credentials, qps, options, events, pacing, relist, search_qps
                )
                result = anyio.run(_run, session, progress_every_s, handle_signals)
        except BaseExceptionGroup as group:  # a StateError from the writer or the ingest, say
            raise _first_snapbatch_error(group) from None
        state.recover()  # anything cut off by an interrupt is in doubt, not "sending"
        counts = state.counts()
    finally:
        state.close()
    names = {job.name for job in search_jobs(manifest)}
    listings = ListingStore.read(state_path) if names else []
    unfinished = tuple(info.job for info in listings if not info.complete and info.job in names)
    return Finished(result, counts, unfinished)


def account_key(credentials: Credentials | CredentialsProvider) -> str:
    """Who owns the quota, across runs: the AccessKeyId, or for STS credentials (whose key id changes with
    every renewal) the source they come from (a role, a profile)."""
    current = credentials if isinstance(credentials, Credentials) else credentials.current()
    return current.access_key_id if current.security_token is None else f"sts:{credentials.source}"


@contextmanager
def kept_signal_handlers(wanted: bool = True) -> Iterator[None]:
    """The SIGINT and SIGTERM handlers as they were before, once the block ends. anyio's signal receiver leaves
    SIG_DFL behind when its event loop ends (asyncio's remove_signal_handler does), whatever the caller had:
    a SIGTERM in the moment between the end of a run and the process's exit then killed it before its last
    words (the summary, the metrics file's last write) instead of going to the caller's handler."""
    if not wanted or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in before.items():
            if handler is not None:  # None: set outside Python, which cannot be put back from here
                signal.signal(signum, handler)


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
    pacing: Pacing
    relist: bool
    search_qps: float
    tally: Tally = field(default_factory=Tally)
    result: RunResult = field(default_factory=RunResult)  # the runner's, filled in as the run goes
    ingested: anyio.Event = field(default_factory=anyio.Event)
    abandon: threading.Event = field(default_factory=threading.Event)
    listing: ListingInfo | None = None  # the page last committed, while a search job is being listed
    paused_at: float | None = None  # when the shared quota became unreachable, while it is

    async def ingest(self, client: VodClient) -> None:
        listings, mark = await self.freeze(client)
        self.listing = None
        fp = await anyio.to_thread.run_sync(fingerprint, self.manifest) + mark
        if self.state.needs_ingest(fp):
            requests = expand(self.manifest, fold_duplicates=False, listings=listings)
            total, new = await anyio.to_thread.run_sync(
                self.state.ingest, requests, fp, self.manifest.batch, self.abandon
            )
            if not self.abandon.is_set():
                self.events.ingested(total, new)
        self.ingested.set()

    async def freeze(self, client: VodClient) -> tuple[Listings, str]:
        """List the manifest's search jobs into the state (or find them frozen there), at SearchMedia's own
        rate; their lists for expand, and a mark that changes whenever one is listed again."""
        jobs = [(job.name, job.ids.search) for job in search_jobs(self.manifest) if job.ids.search is not None]
        if not jobs:
            return {}, ""
        store = ListingStore(self.state)

        def on_page(info: ListingInfo) -> None:
            self.listing = info

        try:
            return await freeze_all(
                store,
                jobs,
                client,
                Limiter(RateWindow(self.search_qps)),
                relist=self.relist,
                on_page=on_page,
                on_done=self.events.listed,
            )
        finally:
            store.close()

    def outcome(self, key: str, outcome: Outcome) -> None:
        self.tally.add(outcome)
        self.events.outcome(key, outcome)

    def on_store(self, problem: str | None) -> None:
        """The shared quota's store went away (``problem``) or came back (None)."""
        now = time.monotonic()
        if problem is not None:
            self.paused_at = now
            self.events.quota_paused(problem, self.pacing.outage_s)
        else:
            since, self.paused_at = self.paused_at, None
            self.events.quota_back(now - since if since is not None else 0.0)

    async def progress(self, every_s: float, clock: Callable[[], float]) -> None:
        started = clock()
        while True:
            await anyio.sleep(every_s)
            counts = await anyio.to_thread.run_sync(self.state.counts)
            progress = Progress(
                counts,
                replace(self.tally),
                clock() - started,
                self.options.in_doubt == "resend",
                ingesting=not self.ingested.is_set(),
                listing=self.listing,
                paused=self.paused_at is not None,
                retries=self.result.retries,
            )
            self.events.progress(progress)
            await anyio.to_thread.run_sync(self.events.checkpoint, progress)

    async def signals(self, stop: anyio.Event, hard_stop: anyio.Event) -> None:
        # The receiver stays open for the whole run: a second signal must stop at once, not raise
        # KeyboardInterrupt through whatever happens to be running.
        # The caller's handlers go back as the receiver closes (asyncio leaves SIG_DFL), not only when the event
        # loop has ended: a SIGTERM while the run tears down (the last progress write, the store's close) would
        # otherwise kill the process before its summary and the metrics file's last write.
        with kept_signal_handlers(), anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for signum in received:
                name = signal.Signals(signum).name
                if not stop.is_set():
                    self.events.stopping(name, self.options.drain_s)
                    stop.set()
                else:
                    self.events.abandoning(name)
                    hard_stop.set()


async def _run(make_session: Callable[[], _Session], progress_every_s: float, handle_signals: bool) -> RunResult:
    session = make_session()  # in the event loop: it holds anyio events
    stop, hard_stop = anyio.Event(), anyio.Event()
    pacing, owner = session.pacing, account_key(session.credentials)
    # a run alone (pacing "off", or nowhere to keep anything) neither learns nor starts from a learned margin
    margins = MarginStore(pacing.cache, session.endpoint, owner) if pacing.cache is not None else None
    learned = margins.load() if margins is not None else None
    shared = pacing.quota not in ("local", "off") or (pacing.quota == "local" and pacing.cache is not None)
    wider = learned if learned is not None and learned > DEFAULT_MARGIN_S else None
    if shared or wider is not None:
        session.events.pacing(pacing.quota if shared else "off", wider)
    window = RateWindow(session.qps, learned_s=learned, now=time.monotonic())
    async with (
        open_limiter(
            pacing,
            window,
            session.endpoint,
            owner,
            on_throttled=margins.save if margins is not None else None,
            on_store=session.on_store,
        ) as limiter,
        VodClient(session.endpoint, session.credentials, max_connections=session.options.concurrency) as client,
        anyio.create_task_group() as tg,
    ):
        if handle_signals and threading.current_thread() is threading.main_thread():
            tg.start_soon(session.signals, stop, hard_stop)
        tg.start_soon(session.progress, progress_every_s, time.monotonic)
        tg.start_soon(session.ingest, client)
        if not isinstance(session.credentials, Credentials):
            tg.start_soon(session.credentials.keep_fresh)  # renews STS credentials ahead of expiry, off the calls' path
        result = await run_batch(
            session.state,
            client,
            limiter,
            session.options,
            on_outcome=session.outcome,
            stop=stop,
            hard_stop=hard_stop,
            more_coming=lambda: not session.ingested.is_set(),
            result=session.result,
        )
        session.abandon.set()  # an unfinished ingest commits as it goes and is redone next time
        if margins is not None:
            margins.save(limiter.window.margin(time.monotonic()))
        tg.cancel_scope.cancel()
    return result
