"""Asks GetJobDetail about submitted jobs that have no final state yet (their event was lost, or never
configured), at a rate of its own, and records the answers in the state.

A pass asks each open job once, never-asked and longest-unasked first; every answer is recorded as it
comes (page by page), so an interrupted poll resumes with the jobs it had not asked yet. ``until_done``
repeats passes, absorbing new events in between, until no job is open or ``timeout_s`` has passed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio

from snapbatch.models import ACCEPTED, FAILED, FATAL, THROTTLED, Outcome
from snapbatch.run.limiter import Limiter
from snapbatch.run.state import FAIL, PROCESSING, SUCCESS, Completion, State

__all__ = ["DetailSource", "PollOptions", "PollResult", "poll_jobs"]

PAGE = 1000
_STATUS = {"Success": SUCCESS, "Fail": FAIL, "Processing": PROCESSING}


class DetailSource(Protocol):
    async def job_detail(self, job_id: str) -> tuple[Outcome, dict[str, Any] | None]: ...


@dataclass(frozen=True)
class PollOptions:
    rate_per_s: float = 10.0
    concurrency: int = 8
    until_done: bool = False
    timeout_s: float | None = None
    every_s: float = 60.0  # pause between passes with until_done


@dataclass
class PollResult:
    asked: int = 0
    completed: int = 0
    failed: int = 0
    processing: int = 0
    unknown: int = 0  # the service did not know the job: recorded as failed, with its code
    throttled: int = 0
    errors: int = 0  # transient errors and lost answers (asked again next pass)
    passes: int = 0
    open_left: int = 0
    timed_out: bool = False
    fatal: Outcome | None = None


def _time(text: Any) -> float | None:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


async def poll_jobs(
    state: State,
    source: DetailSource,
    limiter: Limiter,
    options: PollOptions,
    *,
    absorb: Callable[[], object] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    stop: anyio.Event | None = None,
    result: PollResult | None = None,
) -> PollResult:
    """Poll until every open job was asked once (or, with ``until_done``, until none is open), the timeout
    passes, ``stop`` is set, or a fatal answer (credentials) comes back. ``result``: the PollResult to fill in
    and return, for a caller that reads its counts while the poll goes."""
    result = result if result is not None else PollResult()
    deadline = clock() + options.timeout_s if options.timeout_s is not None else math.inf

    def over() -> bool:
        return clock() >= deadline or result.fatal is not None or (stop is not None and stop.is_set())

    while True:
        await anyio.to_thread.run_sync(absorb)
        result.passes += 1
        asked_before = state.clock()
        while not over():
            page = await anyio.to_thread.run_sync(state.open_jobs, asked_before, PAGE)
            if not page:
                break
            answers: list[tuple[str, Outcome, dict[str, Any] | None]] = []
            slots = anyio.Semaphore(options.concurrency)
            async with anyio.create_task_group() as tg:
                for _, job_id in page:
                    await slots.acquire()
                    if not over():
                        await limiter.acquire()
                    if over():  # checked after the waits too: a stop or the deadline may have come meanwhile
                        slots.release()
                        break
                    result.asked += 1
                    tg.start_soon(_ask, source, job_id, answers, slots)
            await anyio.to_thread.run_sync(_record, state, answers, result, limiter)
        open_now = len(await anyio.to_thread.run_sync(state.open_jobs, math.inf, 1))
        if not open_now or not options.until_done or over():
            break
        wait = min(options.every_s, deadline - clock())
        if wait > 0:
            await _pause(sleep, wait, stop)
        if over():
            break
    result.open_left = _count_open(state)
    result.timed_out = result.open_left > 0 and clock() >= deadline
    return result


async def _pause(sleep: Callable[[float], Awaitable[None]], seconds: float, stop: anyio.Event | None) -> None:
    """``sleep(seconds)``, cut short by ``stop``: a SIGTERM during --until-done's pause ends the poll now, not
    after --every seconds (a supervisor's grace period is often shorter)."""
    if stop is None:
        await sleep(seconds)
        return
    async with anyio.create_task_group() as tg:

        async def wake() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(wake)
        await sleep(seconds)
        tg.cancel_scope.cancel()


async def _ask(
    source: DetailSource, job_id: str, answers: list[tuple[str, Outcome, dict[str, Any] | None]], slots: anyio.Semaphore
) -> None:
    try:
        outcome, detail = await source.job_detail(job_id)
        answers.append((job_id, outcome, detail))
    finally:
        slots.release()


def _count_open(state: State) -> int:
    counts = state.completion_counts()
    return int(counts["processing"] + counts["unknown"])


def _record(
    state: State, answers: list[tuple[str, Outcome, dict[str, Any] | None]], result: PollResult, limiter: Limiter
) -> None:
    completions: list[Completion] = []
    asked_only: list[str] = []
    for job_id, outcome, detail in answers:
        if outcome.kind == ACCEPTED and detail is not None:
            status = _STATUS.get(str(detail.get("Status")))
            if status == SUCCESS:
                result.completed += 1
            elif status == FAIL:
                result.failed += 1
            elif status == PROCESSING:
                result.processing += 1
            if status is None:
                asked_only.append(job_id)
                continue
            completions.append(
                Completion(
                    job_id,
                    status,
                    at=_time(detail.get("CompleteTime")) if status != PROCESSING else None,
                    message="GetJobDetail says the job failed (it gives no reason; the SnapshotComplete event does)"
                    if status == FAIL
                    else None,
                )
            )
            continue
        if outcome.kind == FAILED:
            # The service does not know the job (its records expired, or the endpoint is not the one that took
            # it). Asking again would get the same answer forever, so it is final: failed, with the service's
            # code, so `run --resubmit-failed-jobs` can send it again if its snapshots are missing.
            result.unknown += 1
            completions.append(
                Completion(
                    job_id,
                    FAIL,
                    code=outcome.code,
                    message=f"GetJobDetail does not know this job ({outcome.message or outcome.code}); resubmit it "
                    "with `snapbatch run --resubmit-failed-jobs` if its snapshots are missing",
                )
            )
            continue
        asked_only.append(job_id)  # asked again next pass, after the jobs not asked yet
        if outcome.kind == THROTTLED:
            result.throttled += 1
            limiter.throttled()
        elif outcome.kind == FATAL:
            result.fatal = result.fatal or outcome
        else:
            result.errors += 1
    state.record_completions(completions)
    state.checked(asked_only)
