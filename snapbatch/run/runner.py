"""Pending requests -> limiter -> client -> state, until done or told to stop.

The dispatcher takes a few requests at a time (about 50 ms of sending) and starts them one by one as the
limiter allows: once a request's slot has come, its intent is committed, then its call starts; so a kill
during a long wait leaves nothing marked as being sent. Calls run concurrently (capped); their outcomes go
to a group-commit writer. What happens to an outcome is its kind's to say (OutcomeKind in models:
retryable, proves_credentials, counts_toward_outage, status; vod.client.classify gives an answer its kind):
retryable outcomes come back after an exponential backoff with full jitter. Until an answer proves the
credentials work, one call at a time is in flight, so a wrong key costs a single call. A stop interrupts any
wait (a slot, a free concurrency slot, the probe); a hard stop also abandons the calls in flight (left
'sending', so in doubt). A watchdog renews the run's lease every second and stops the run when the state
file is no longer the one open (deleted, replaced).
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import anyio
import anyio.abc
import anyio.lowlevel

from snapbatch.models import Outcome, OutcomeKind, RequestStatus
from snapbatch.run.limiter import Limiter
from snapbatch.run.quota import QuotaUnavailable
from snapbatch.run.state import Change, Intent, Row, Settled, State, Unsent

__all__ = ["RunOptions", "RunResult", "Sender", "StopReason", "is_testing", "run_batch", "set_testing"]

PAGE = 1000
LOOKAHEAD_S = 0.05
_testing = False


def set_testing(testing: bool) -> None:
    """Test mode (as stamina's): retries come back without backoff. They are still paced by the limiter
    and counted against the attempt cap and the retry budget; only the waiting goes, so a test suite does
    not sit through seconds of real backoff. Idempotent; process-wide."""
    global _testing
    _testing = bool(testing)


def is_testing() -> bool:
    """Whether test mode is on."""
    return _testing


class Sender(Protocol):
    async def submit(self, params: dict[str, str]) -> Outcome: ...


@dataclass(frozen=True)
class RunOptions:
    concurrency: int = 80
    in_doubt: str = "resend"  # or "skip"
    retry_failed: bool = False
    max_requests: int | None = None
    max_duration_s: float | None = None
    max_attempts: int = 8
    retry_budget: int | None = None  # a fixed number of retries; None: see _Run.retries_allowed
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    drain_s: float = 5.0  # on interrupt, how long calls in flight may still finish
    watch_state_s: float = 1.0  # how often the state file's identity is checked and the run's lease renewed
    outage_after: int = 50  # this many answers in a row that are transient or lost: the service is down, stop
    # before the endpoint has answered anything at all, this many connection failures or lost answers in a
    # row stop the run: a wrong endpoint, a firewall or TLS interception, not a blip, so say so quickly
    unreachable_after: int = 5


class StopReason(StrEnum):
    """Why a run ended before everything was sent (the value is the JSON summary's "stopped")."""

    FATAL = "fatal"  # an answer said the account or the credentials cannot work
    MAX_REQUESTS = "max-requests"
    MAX_DURATION = "max-duration"
    RETRY_BUDGET = "retry-budget"  # the service kept failing or throttling
    OUTAGE = "outage"  # many answers in a row were 5xx or lost
    UNREACHABLE = "unreachable"  # the endpoint never answered at all
    WRONG_ENDPOINT = "wrong-endpoint"  # what answered is not VOD's API (a redirect, a proxy's page)
    QUOTA = "quota"  # the shared quota's store stayed unreachable (RunResult.quota_error says why)
    INTERRUPTED = "interrupted"  # the caller set ``stop`` (Ctrl-C, SIGTERM)


@dataclass
class RunResult:
    submitted: int = 0
    failed: int = 0
    throttled: int = 0
    retries: int = 0
    started: int = 0  # requests started for the first time in this run
    calls: int = 0  # calls made, retries included
    gave_up: int = 0  # requests left pending or in doubt after options.max_attempts attempts
    stop_reason: StopReason | None = None  # None: everything there was to send was sent
    quota_error: str | None = None  # why the shared quota's store was unusable (stop_reason QUOTA)
    fatal: Outcome | None = None
    last_error: Outcome | None = None  # the latest throttled, transient or lost answer, or a wrong endpoint's
    elapsed_s: float = 0.0
    codes: dict[str, int] = field(default_factory=dict)


class _Writer:
    """Group commit: whatever is waiting when the writer gets to it goes into one transaction, written in the
    event loop when that needs no waiting, else in a thread. Use as an async context manager: on exit nothing
    more is taken, and what is queued is still written before ``run`` returns. A plain list and one event
    rather than a memory object stream: taking a batch then costs no turn of the loop."""

    def __init__(self, state: State) -> None:
        self.state = state
        # each change, with the event to set once it is durable (for intents, which a call waits for)
        self._queue: list[tuple[Change, anyio.Event | None]] = []
        self._wake = anyio.Event()
        self._open = True
        self._ended = False  # run() has returned or failed: nothing queued now would ever be written

    async def __aenter__(self) -> _Writer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._open = False
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if not self._open:
                        return
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                if self._open and all(durable is None for _, durable in self._queue):
                    # Outcomes alone wait no one: one more turn of the loop lets the answers read in it, and the
                    # next intents, join them in this commit (a commit costs about what a call's answer does).
                    await anyio.lowlevel.checkpoint()
                queued, self._queue = self._queue, []
                changes = [change for change, _ in queued]
                # In the loop when no other write is under way: a thread's round trip for each intent cost more
                # CPU than the write itself. What would wait (the lease's renewal, the ingest) waits in a thread.
                if not self.state.apply_at_once(changes):
                    await anyio.to_thread.run_sync(self.state.apply, changes)
                for _, durable in queued:
                    if durable is not None:
                        durable.set()
        finally:
            self._ended = True

    def _put(self, change: Change, durable: anyio.Event | None) -> None:
        if self._ended:
            raise anyio.BrokenResourceError  # the writer failed (its error ends the run)
        if not self._open:
            raise anyio.ClosedResourceError
        self._queue.append((change, durable))
        self._wake.set()

    async def intent(self, keys: list[str]) -> None:
        """Commit 'sending' for ``keys``; returns once it is durable."""
        events = []
        for key in keys:
            event = anyio.Event()
            events.append(event)
            self._put(Intent(key), event)
        for event in events:
            await event.wait()

    def outcome(self, key: str, outcome: Outcome) -> None:
        self._put(Settled(key, outcome), None)

    def unsend(self, key: str, status: RequestStatus) -> None:
        self._put(Unsent(key, status), None)


class _Run:
    def __init__(
        self,
        state: State,
        sender: Sender,
        limiter: Limiter,
        options: RunOptions,
        on_outcome: Callable[[str, Outcome], None],
        clock: Callable[[], float],
        rng: random.Random,
        more_coming: Callable[[], bool],
        result: RunResult,
    ) -> None:
        self.state, self.sender, self.limiter, self.options = state, sender, limiter, options
        self.on_outcome, self.clock, self.rng, self.more_coming = on_outcome, clock, rng, more_coming
        self.writer = _Writer(state)
        self.result = result
        self.in_flight = 0
        self.proven = False
        self.reached = False  # some HTTP answer came back
        self.retries: list[tuple[float, int, Row]] = []
        self.initial_work = 0  # requests the state held for this run when it started
        self.tries: dict[str, int] = {}  # attempts this run made of each request now waiting for a retry
        self.stop_reason: StopReason | None = None
        self.wakeup = anyio.Event()
        self.waiting: anyio.CancelScope | None = None  # the dispatcher's current wait, cancelled by stop()
        self.page: list[Row] = []
        self.after_seq = 0
        self.exhausted = False
        self.limit_reached = False
        self.errors_in_a_row = 0
        statuses = [RequestStatus.PENDING]
        if options.in_doubt == "resend":
            statuses.append(RequestStatus.IN_DOUBT)
        if options.retry_failed:
            statuses.append(RequestStatus.FAILED)
        self.statuses = tuple(statuses)

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.wakeup.set()
        if self.waiting is not None:
            self.waiting.cancel()

    async def _wait(self, timeout_s: float) -> None:
        self.wakeup = anyio.Event()
        with anyio.move_on_after(max(0.0, timeout_s)):
            await self.wakeup.wait()

    async def next_batch(self) -> list[Row]:
        """Up to ~50 ms of work: due retries first, then pending rows in manifest order. Waits while only
        retries, calls in flight or a running ingest can bring more; empty when there is nothing left."""
        size = 1 if not self.proven else max(1, min(200, int(self.limiter.window.rate(self.clock()) * LOOKAHEAD_S)))
        while self.stop_reason is None:
            now = self.clock()
            batch: list[Row] = []
            while self.retries and self.retries[0][0] <= now and len(batch) < size:
                batch.append(heapq.heappop(self.retries)[2])
            while len(batch) < size:
                if not self.page and not self.exhausted:
                    # asked before the read: an ingest that ends during the read has committed its rows by then,
                    # so an empty page after "no more coming" really is the end
                    coming = self.more_coming()
                    page = await anyio.to_thread.run_sync(self.state.pending, self.statuses, self.after_seq, PAGE)
                    self.page = list(reversed(page))
                    if page:
                        self.after_seq = page[-1].seq
                    elif not coming:
                        self.exhausted = True
                if not self.page:
                    break
                limit = self.options.max_requests
                if limit is not None and self.result.started >= limit:
                    self.limit_reached = True  # what was started still finishes, retries included
                    self.page.clear()
                    self.exhausted = True
                    break
                self.result.started += 1
                batch.append(self.page.pop())
            if batch:
                return batch
            if not self.retries and self.in_flight == 0 and self.exhausted:
                return []
            wait = self.retries[0][0] - now if self.retries else (0.2 if not self.exhausted else 1.0)
            await self._wait(wait)
        return []

    async def dispatch(self, calls: anyio.abc.TaskGroup) -> None:
        # a free slot is taken without a turn of the loop; the intent's commit, just after, yields anyway
        slots = anyio.Semaphore(self.options.concurrency, fast_acquire=True)
        while batch := await self.next_batch():
            while batch:
                admitted = await self.admit(batch, slots, calls)
                if not admitted:
                    return
                del batch[:admitted]

    async def admit(self, rows: list[Row], slots: anyio.Semaphore, calls: anyio.abc.TaskGroup) -> int:
        """Wait for a free call slot, the probe's answer and the limiter's slot (any of it cut short by a stop),
        then commit the intent and start the call; when the limiter admits several at once (a fast pace, the
        key proven), the next of ``rows`` go with the first, as far as free call slots allow, their intents in
        one commit. Returns how many of ``rows`` started (from the first on), 0 on a stop. A stop that comes
        while an intent is being committed, or after, takes back each call not started: nothing is ever left
        marked as sent that was not."""
        committed: list[Row] = []
        started = 0
        held = 0  # call slots taken for this admission (those of calls started are the calls' own)

        async def intent(count: int) -> None:
            group = rows[:count]
            try:
                await self.writer.intent([row.key for row in group])
            except BaseException:  # stopped while the intents were queued: take them back, in the same queue
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    for row in group:
                        self.writer.unsend(row.key, row.status)
                raise
            committed.extend(group)

        def start(index: int, at: float) -> None:
            nonlocal started
            if self.stop_reason is not None:
                return  # stopped meanwhile: taken back below
            row = rows[index]
            self.in_flight += 1
            self.result.calls += 1
            started += 1
            calls.start_soon(self.send, row, slots)

        try:
            with anyio.CancelScope() as self.waiting:
                if self.stop_reason is None:
                    await slots.acquire()
                    held = 1
                    while not self.proven and self.in_flight > 0 and self.stop_reason is None:
                        await self._wait(1.0)
                    # the probe goes alone; after it, calls that may go together take the free call slots
                    while self.proven and held < len(rows):
                        try:
                            slots.acquire_nowait()
                        except anyio.WouldBlock:
                            break
                        held += 1
                    if self.stop_reason is None:
                        try:
                            await self.limiter.acquire_many(held, intent, start)
                        except QuotaUnavailable as exc:  # a shared quota away too long: stop for good
                            self.result.quota_error = str(exc)
                            self.stop(StopReason.QUOTA)
        except BaseException:  # a hard stop cancels from outside: intents just committed are taken back too
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                for row in committed[started:]:
                    self.writer.unsend(row.key, row.status)
            raise
        finally:
            self.waiting = None
        for _ in range(held - started):
            slots.release()
        for row in committed[started:]:  # marked sending but never sent: back as it was
            self.writer.unsend(row.key, row.status)
        return started if self.stop_reason is None else 0

    async def send(self, row: Row, slots: anyio.Semaphore) -> None:
        try:
            outcome = await self.sender.submit(row.params)
            self.settle(row, outcome)
        finally:
            self.in_flight -= 1
            slots.release()
            self.wakeup.set()

    def settle(self, row: Row, outcome: Outcome) -> None:
        r, kind = self.result, outcome.kind
        if outcome.code:
            r.codes[outcome.code] = r.codes.get(outcome.code, 0) + 1
        if outcome.http_status is not None:
            self.reached = True
        if kind.proves_credentials:
            self.proven = True
            self.errors_in_a_row = 0
        elif kind.counts_toward_outage:
            self.errors_in_a_row += 1
            if not self.reached and self.errors_in_a_row >= self.options.unreachable_after:
                self.stop(StopReason.UNREACHABLE)
            elif self.errors_in_a_row >= self.options.outage_after:
                self.stop(StopReason.OUTAGE)
        if kind.retryable:
            r.last_error = outcome
        if kind == OutcomeKind.ACCEPTED:
            r.submitted += 1
        elif kind == OutcomeKind.FAILED:
            r.failed += 1
        elif kind == OutcomeKind.FATAL:
            r.fatal = r.fatal or outcome
            self.stop(StopReason.FATAL)
        elif kind == OutcomeKind.WRONG_ENDPOINT:
            r.last_error = outcome
            self.stop(StopReason.WRONG_ENDPOINT)
        elif kind == OutcomeKind.THROTTLED:
            r.throttled += 1
            self.limiter.throttled()
        self.writer.outcome(row.key, outcome)
        self.on_outcome(row.key, outcome)
        if kind.retryable and self.stop_reason is None:
            self.retry(row, outcome)
        else:
            self.tries.pop(row.key, None)

    def retries_allowed(self) -> int:
        """The run's retry budget: a tenth of its work (at least 100), plus one retry for every request
        answered for good (submitted, or failed for itself). So a service that fails fewer than about half
        of the calls slows the run without stopping it, while an outage, which answers nothing, spends the
        budget and ends the run. The work is what the state held at the start or, when an ingest was still
        filling the state then (a fresh big batch), what the run has started since."""
        if self.options.retry_budget is not None:
            return self.options.retry_budget
        base = max(100, max(self.initial_work, self.result.started) // 10)
        return base + self.result.submitted + self.result.failed

    def retry(self, row: Row, outcome: Outcome) -> None:
        # The cap and the backoff count this run's attempts: a request given up on last night gets its full
        # share again tonight (row.attempts, the lifetime count, goes to the state and the report).
        tries = self.tries.pop(row.key, 0) + 1
        if tries >= self.options.max_attempts:
            self.result.gave_up += 1  # stays pending / in_doubt for the next run
            return
        if self.result.retries >= self.retries_allowed():
            self.stop(StopReason.RETRY_BUDGET)
            return
        self.result.retries += 1
        self.tries[row.key] = tries
        # a kind that does not back off (renewed credentials) has nothing to wait for; the limiter paces it
        backoff_s = min(self.options.backoff_cap_s, self.options.backoff_base_s * 2**tries)
        delay = self.rng.uniform(0, backoff_s) if outcome.kind.backs_off and not _testing else 0.0
        again = dataclasses.replace(
            row,
            status=outcome.kind.status,
            attempts=row.attempts + 1,
            error_code=outcome.code,
            error_message=outcome.message,
        )
        heapq.heappush(self.retries, (self.clock() + delay, row.seq, again))
        self.wakeup.set()


async def run_batch(
    state: State,
    sender: Sender,
    limiter: Limiter,
    options: RunOptions,
    *,
    on_outcome: Callable[[str, Outcome], None] = lambda key, outcome: None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    stop: anyio.Event | None = None,
    hard_stop: anyio.Event | None = None,
    more_coming: Callable[[], bool] = lambda: False,
    result: RunResult | None = None,
) -> RunResult:
    """Send everything the state has pending (and whatever an ingest still running adds, while
    ``more_coming()``). ``on_outcome(key, outcome)`` hears of every attempt as it comes back. Set ``stop`` to
    finish early (Ctrl-C): no new calls start, calls in flight get ``drain_s`` to finish, and anything still
    unanswered is left 'sending' for State.recover(). Set ``hard_stop`` too (a second Ctrl-C) to abandon the
    calls in flight at once. Raises StateError when the state file is deleted or replaced under the run.
    ``result``: the RunResult to fill in and return, for a caller that reads its counts while the run goes."""
    run = _Run(
        state, sender, limiter, options, on_outcome, clock, rng or random.Random(), more_coming, result or RunResult()
    )
    run.initial_work = sum(state.counts()[s] for s in run.statuses)
    started = clock()
    async with anyio.create_task_group() as outer:
        outer.start_soon(run.writer.run)
        watcher = anyio.CancelScope()

        async def watch() -> None:
            with watcher:
                deadline = options.max_duration_s if options.max_duration_s is not None else math.inf
                with anyio.move_on_after(deadline):
                    await (stop.wait() if stop is not None else anyio.sleep_forever())
                    run.stop(StopReason.INTERRUPTED)
                    return
                run.stop(StopReason.MAX_DURATION)

        side = [anyio.CancelScope(), anyio.CancelScope()]  # the state watchdog and the hard stop, while calls may start
        calls_scope: list[anyio.CancelScope] = []

        async def watch_state() -> None:
            # Without this a slow run would notice a deleted state file only at its next write, maybe
            # minutes away; meanwhile its lease says it is alive.
            with side[0]:
                while True:
                    await anyio.sleep(options.watch_state_s)
                    await anyio.to_thread.run_sync(state.renew if state.locked else state.check_identity)

        async def abandon() -> None:
            with side[1]:
                await (hard_stop.wait() if hard_stop is not None else anyio.sleep_forever())
                run.stop(StopReason.INTERRUPTED)
                for scope in calls_scope:
                    scope.cancel()  # what is in flight stays 'sending': in doubt

        outer.start_soon(watch)
        outer.start_soon(watch_state)
        outer.start_soon(abandon)
        async with run.writer, anyio.create_task_group() as calls:
            calls_scope.append(calls.cancel_scope)
            await run.dispatch(calls)
            if run.stop_reason == StopReason.INTERRUPTED:
                with anyio.move_on_after(options.drain_s):
                    while run.in_flight:
                        await run._wait(1.0)
                calls.cancel_scope.cancel()
        watcher.cancel()
        for scope in side:
            scope.cancel()
    result = run.result
    result.stop_reason = run.stop_reason or (StopReason.MAX_REQUESTS if run.limit_reached else None)
    result.elapsed_s = clock() - started
    return result
