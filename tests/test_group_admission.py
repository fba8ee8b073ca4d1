"""Calls admitted together at a fast pace (a call a millisecond or faster): their intents in one commit, the
limiter's guarantee kept exactly, and never at VOD's 30 calls/s."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from snapbatch.emulator import EmulatorConfig
from snapbatch.manifest.expand import expand, fingerprint
from snapbatch.manifest.load import load_manifest
from snapbatch.run.limiter import DEFAULT_MARGIN_S, GROUP_S, Limiter, RateWindow
from snapbatch.run.quota import HostFileStore, SharedLimiter
from snapbatch.run.runner import RunOptions, RunResult, run_batch
from snapbatch.run.state import Intent, State
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.emulated import AK_ID, AK_SECRET, running
from tests.test_limiter import assert_the_window_guarantee
from tests.test_run import _manifest


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(st.floats(0.5, 120), st.floats(1 / GROUP_S * 1.02, 4000)),
    st.lists(
        st.tuples(st.floats(0, 0.01), st.floats(0, 0.002), st.integers(1, 16), st.booleans()), min_size=1, max_size=400
    ),
    st.floats(0, 0.003),
)
def test_groups_keep_the_guarantee_exactly(
    qps: float, calls: list[tuple[float, float, int, bool]], commit_s: float
) -> None:
    """On an injected clock, admissions of up to 16 calls at a time (callers arriving at any time, timers
    waking late, intents taking up to 3 ms to commit, throttles anywhere): of the start times recorded, never
    more than max(1, floor(qps)) in any window of 1 s + the margin in force, in order; ``before`` is told the
    size of each group once, and ``started`` each call in order; below a call every GROUP_S, one call at a
    time. Slow: 150 generated runs of up to 6,400 calls, every window checked."""
    clock = [0.0]
    lateness = [0.0]

    async def late_sleep(seconds: float) -> None:
        clock[0] += seconds + lateness[0]

    async def go() -> list[tuple[float, float]]:
        limiter = Limiter(RateWindow(qps), clock=lambda: clock[0], sleep=late_sleep)
        starts: list[tuple[float, float]] = []
        for gap, late, most, throttle in calls:
            clock[0] += gap
            lateness[0] = late
            told: list[int] = []
            seen: list[tuple[int, float]] = []

            async def before(count: int, told: list[int] = told) -> None:
                told.append(count)
                clock[0] += commit_s

            def started(index: int, at: float, seen: list[tuple[int, float]] = seen) -> None:
                seen.append((index, at))

            times = await limiter.acquire_many(most, before, started)
            assert told == [len(times)] and 1 <= len(times) <= most
            assert seen == list(enumerate(times))
            if (1.0 + limiter.window.margin(clock[0])) / limiter.window.rate(clock[0]) > GROUP_S:
                assert len(times) == 1
            starts += [(t, limiter.window.margin(t)) for t in times]
            if throttle:
                limiter.throttled()
        return starts

    assert_the_window_guarantee(anyio.run(go), qps)


def test_at_a_fast_pace_due_calls_go_together_and_at_30_per_second_one_by_one() -> None:
    """With the limit lifted, one admission of 16 takes 16 calls (one ``before``); at qps 30 it takes one, and
    the next waits for its own slot, (1 s + margin) / 30 later."""
    clock = [100.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    async def admit(qps: float) -> list[list[float]]:
        limiter = Limiter(RateWindow(qps), clock=lambda: clock[0], sleep=sleep)
        groups = [await limiter.acquire_many(16) for _ in range(3)]
        assert limiter.admitted == sum(map(len, groups))
        return groups

    fast = anyio.run(admit, 1_000_000)
    assert [len(g) for g in fast] == [16, 16, 16]
    slow = anyio.run(admit, 30)
    assert [len(g) for g in slow] == [1, 1, 1]
    assert math.isclose(slow[2][0] - slow[1][0], (1.0 + DEFAULT_MARGIN_S) / 30)


def test_the_host_file_confirms_each_call_of_a_group(tmp_path: Path) -> None:
    """Sharing the quota through the host file, an admission of 8 with the limit lifted reserves and confirms
    8 slots (each call recorded in the file as it starts); at qps 30 one. The times returned are the run's."""

    async def admit(qps: float, name: str) -> tuple[list[float], dict[int, float]]:
        store = HostFileStore(tmp_path / name)
        limiter = SharedLimiter(RateWindow(qps), store)
        try:
            times = await limiter.acquire_many(8)
        finally:
            await store.aclose()
        return times, HostFileStore.confirmed_starts(tmp_path / name)

    times, confirmed = anyio.run(admit, 1_000_000, "fast")
    # the file records each start as it confirms it, at or after the moment the run asked (same clock)
    assert len(times) == 8 and all(r >= t for r, t in zip(sorted(confirmed.values()), times, strict=True))
    times, confirmed = anyio.run(admit, 30, "slow")
    assert len(times) == 1 and len(confirmed) == 1 and next(iter(confirmed.values())) >= times[0]


def test_a_run_at_a_fast_pace_commits_intents_together_and_sends_each_once(tmp_path: Path) -> None:
    """A run with the limit lifted and 16 in flight: after the probe (alone), the next admission takes every
    free call slot, so some transaction commits several intents at once; every request is still sent once and
    accepted, none left marked as being sent."""
    manifest = load_manifest(_manifest(tmp_path, 60), {})
    state = State(tmp_path / "s.sqlite3")
    state.ingest(expand(manifest), fingerprint(manifest), manifest.batch)
    intents_by_write: list[int] = []
    real_at_once, real_apply = state.apply_at_once, state.apply

    def counted(write: Any) -> Any:
        def wrapper(changes: Any) -> Any:
            changes = list(changes)
            done = write(changes)
            if done is not False:
                intents_by_write.append(sum(isinstance(c, Intent) for c in changes))
            return done

        return wrapper

    state.apply_at_once, state.apply = counted(real_at_once), counted(real_apply)  # type: ignore[method-assign]

    async def go() -> RunResult:
        with anyio.fail_after(60):
            async with VodClient(emu.url, Credentials(AK_ID, AK_SECRET), max_connections=16) as client:
                limiter = Limiter(RateWindow(1_000_000))
                return await run_batch(state, client, limiter, RunOptions(concurrency=16))

    try:
        with running(EmulatorConfig(qps=1_000_000)) as emu:
            result = anyio.run(go)
            calls = emu.emulator.calls
        assert result.submitted == 60 and result.calls == 60
        assert sorted(c["params"]["VideoId"] for c in calls if c.get("outcome") == "accepted") == [
            f"video-{i:05d}" for i in range(60)
        ]
        assert sum(intents_by_write) == 60 and max(intents_by_write) >= 2
        assert state.counts()["sending"] == 0 and state.counts()["submitted"] == 60
    finally:
        state.close()
