"""Pending requests -> limiter -> client -> state, until done or told to stop.

One dispatcher hands requests out one at a time: record the intent, wait for the limiter, start the
call. Calls run concurrently (capped); each records its outcome. Retryable outcomes come back after an
exponential backoff with full jitter. Until the first answer proves the credentials work, only one
call is in flight, so a wrong key costs a single call.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from snapbatch.limiter import Limiter
from snapbatch.models import ACCEPTED, FAILED, FATAL, IN_DOUBT, THROTTLED, TRANSIENT, Outcome
from snapbatch.state import Row, State

__all__ = ["RunOptions", "RunResult", "Sender", "run_batch"]

PAGE = 500


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
    retry_budget: int | None = None  # None: max(100, 10% of the work)
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    drain_s: float = 5.0  # on interrupt, how long in-flight calls may still finish


@dataclass
class RunResult:
    submitted: int = 0
    failed: int = 0
    throttled: int = 0
    retries: int = 0
    started: int = 0
    stop_reason: str | None = (
        None  # None (finished), "fatal", "max-requests", "max-duration", "retry-budget", "interrupted"
    )
    fatal: Outcome | None = None
    elapsed_s: float = 0.0
    codes: dict[str, int] = field(default_factory=dict)


class _Run:
    def __init__(
        self,
        state: State,
        sender: Sender,
        limiter: Limiter,
        options: RunOptions,
        on_event: Callable[[str, dict[str, Any]], None],
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.state, self.sender, self.limiter, self.options = state, sender, limiter, options
        self.on_event, self.clock, self.rng = on_event, clock, rng
        self.result = RunResult()
        self.in_flight = 0
        self.proven = False
        self.idle = anyio.Event()
        self.retries: list[tuple[float, int, Row]] = []
        self.retry_budget = options.retry_budget
        self.stop_reason: str | None = None
        self.wakeup = anyio.Event()
        statuses = ["pending"]
        if options.in_doubt == "resend":
            statuses.append("in_doubt")
        if options.retry_failed:
            statuses.append("failed")
        self.statuses = tuple(statuses)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.wakeup.set()

    async def next_row(self, cursor: list[Any]) -> Row | None:
        """The next row to send: a due retry first, else the next pending row; waits for retries if that is all."""
        while self.stop_reason is None:
            now = self.clock()
            if self.retries and self.retries[0][0] <= now:
                return heapq.heappop(self.retries)[2]
            if not cursor[1] and not cursor[2]:
                page = await anyio.to_thread.run_sync(self.state.pending, self.statuses, cursor[0], PAGE)
                cursor[1] = list(reversed(page))
                cursor[2] = len(page) < PAGE
                if page:
                    cursor[0] = page[-1].seq
            if cursor[1]:
                if self.options.max_requests is not None and self.result.started >= self.options.max_requests:
                    self.stop("max-requests")  # calls in flight finish; their retries wait for the next run
                    return None
                else:
                    self.result.started += 1
                    row: Row = cursor[1].pop()
                    return row
            if not self.retries and self.in_flight == 0:
                return None
            delay = (self.retries[0][0] - now) if self.retries else 1.0
            self.wakeup = anyio.Event()
            with anyio.move_on_after(max(0.0, delay)):
                await self.wakeup.wait()
        return None

    async def dispatch(self, tg: anyio.abc.TaskGroup) -> None:
        cursor: list[Any] = [0, [], False]
        slots = anyio.Semaphore(self.options.concurrency)
        while True:
            row = await self.next_row(cursor)
            if row is None:
                break
            await slots.acquire()
            while not self.proven and self.in_flight > 0 and self.stop_reason is None:
                self.wakeup = anyio.Event()
                await self.wakeup.wait()
            if self.stop_reason is not None:
                slots.release()
                break
            await anyio.to_thread.run_sync(self.state.mark_sending, row.key)
            await self.limiter.acquire()
            self.in_flight += 1
            tg.start_soon(self.send, row, slots)

    async def send(self, row: Row, slots: anyio.Semaphore) -> None:
        try:
            outcome = await self.sender.submit(row.params)
            with anyio.CancelScope(shield=True):
                await self.settle(row, outcome)
        finally:
            self.in_flight -= 1
            slots.release()
            self.wakeup.set()

    async def settle(self, row: Row, outcome: Outcome) -> None:
        r = self.result
        if outcome.code:
            r.codes[outcome.code] = r.codes.get(outcome.code, 0) + 1
        if outcome.kind in (ACCEPTED, FAILED, THROTTLED):
            self.proven = True
        if outcome.kind == ACCEPTED:
            r.submitted += 1
            status = "submitted"
        elif outcome.kind == FAILED:
            r.failed += 1
            status = "failed"
        elif outcome.kind == FATAL:
            status = "pending"  # a fatal answer made no job
            r.fatal = r.fatal or outcome
            self.stop("fatal")
        else:
            status = "in_doubt" if outcome.kind == IN_DOUBT else "pending"
            if outcome.kind == THROTTLED:
                r.throttled += 1
                self.limiter.throttled()
        await anyio.to_thread.run_sync(self.state.record, row.key, outcome, status)
        self.on_event("outcome", {"key": row.key, "kind": outcome.kind, "code": outcome.code})
        if outcome.kind in (THROTTLED, TRANSIENT, IN_DOUBT) and self.stop_reason is None:
            self.retry(row, outcome)

    def retry(self, row: Row, outcome: Outcome) -> None:
        attempts = row.attempts + 1
        if attempts >= self.options.max_attempts:
            return  # stays pending / in_doubt for the next run
        if self.retry_budget is not None:
            if self.retry_budget <= 0:
                self.stop("retry-budget")
                return
            self.retry_budget -= 1
        self.result.retries += 1
        delay = self.rng.uniform(0, min(self.options.backoff_cap_s, self.options.backoff_base_s * 2**attempts))
        again = Row(
            row.key,
            row.seq,
            row.job,
            row.template,
            row.id_kind,
            row.video,
            row.params,
            row.status,
            attempts,
            row.job_id,
            row.request_id,
            outcome.code,
            outcome.message,
            row.submitted_at,
        )
        heapq.heappush(self.retries, (self.clock() + delay, row.seq, again))
        self.wakeup.set()


async def run_batch(
    state: State,
    sender: Sender,
    limiter: Limiter,
    options: RunOptions,
    *,
    on_event: Callable[[str, dict[str, Any]], None] = lambda kind, data: None,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    stop: anyio.Event | None = None,
) -> RunResult:
    """Send everything the state has pending. Set ``stop`` to finish early (Ctrl-C): no new calls start,
    calls in flight get ``drain_s`` to finish, and anything still unanswered stays in_doubt."""
    run = _Run(state, sender, limiter, options, on_event, clock, rng or random.Random())
    if run.retry_budget is None:
        work = sum(state.counts()[s] for s in run.statuses)
        run.retry_budget = max(100, work // 10)
    started = clock()
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            if options.max_duration_s is not None:
                with anyio.move_on_after(options.max_duration_s):
                    await (stop.wait() if stop else anyio.sleep_forever())
                    run.stop("interrupted")
                    return
                run.stop("max-duration")
            elif stop is not None:
                await stop.wait()
                run.stop("interrupted")

        watcher = anyio.CancelScope()

        async def guarded_watch() -> None:
            with watcher:
                await watch()

        tg.start_soon(guarded_watch)
        async with anyio.create_task_group() as calls:
            await run.dispatch(calls)
            if run.stop_reason == "interrupted":
                with anyio.move_on_after(options.drain_s):
                    while run.in_flight:
                        run.wakeup = anyio.Event()
                        await run.wakeup.wait()
                calls.cancel_scope.cancel()
        watcher.cancel()
    result = run.result
    result.stop_reason = run.stop_reason
    result.elapsed_s = clock() - started
    return result
