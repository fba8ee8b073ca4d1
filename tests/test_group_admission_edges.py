"""Group admission at its edges: a late wake, the shared quota at just over 1,000 calls/s, the run's clock, a group
that loses its slots and is stopped midway (found by review)."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from snapbatch.run.limiter import GROUP_S, Limiter, RateWindow
from snapbatch.run.quota import HostFileStore, RedisStore, SharedLimiter
from tests.redis_server import redis_server


def test_a_late_wake_restarts_the_pace_instead_of_admitting_a_burst() -> None:
    """A timer that wakes 100 ms after the slot (a busy loop) restarts the pace from now, as it did before
    groups: only calls due within GROUP_S of each other go together, never the 100 ms of calls missed."""
    clock = [10.0]
    qps = 2000.0

    async def late_sleep(seconds: float) -> None:
        clock[0] += seconds + 0.1

    async def go() -> list[float]:
        limiter = Limiter(RateWindow(qps), clock=lambda: clock[0], sleep=late_sleep)
        await limiter.acquire_many(1)
        return await limiter.acquire_many(80)  # must wait for its slot, and wakes 100 ms late

    times = anyio.run(go)
    interval = (1.0 + limiter_margin()) / qps
    assert len(times) <= 1 + math.ceil(GROUP_S / interval), f"{len(times)} calls admitted at once, all at {set(times)}"


def limiter_margin() -> float:
    return RateWindow(30).margin(0.0)


def test_the_shared_quota_at_a_fast_pace_wastes_no_slot_per_admission(tmp_path: Path) -> None:
    """At 1,100 qps through the host file, admissions of up to 16 keep the quota's pace: 600 calls take about
    600 intervals on the injected clock, not half as long again (a reservation reserved past GROUP_S and left
    unconfirmed at the end of each group is a slot no run on the key can use)."""
    clock = [100.0]
    qps = 1100.0

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    async def go() -> tuple[int, float]:
        store = HostFileStore(tmp_path / "k", clock=lambda: clock[0])
        limiter = SharedLimiter(RateWindow(qps), store, clock=lambda: clock[0], sleep=sleep)
        try:
            await limiter.acquire_many(1)  # a fresh file: the first slot is a window away
            began = clock[0]
            calls = 0
            while calls < 600:
                calls += len(await limiter.acquire_many(16))
        finally:
            await store.aclose()
        return calls, clock[0] - began

    calls, elapsed = anyio.run(go)
    interval = (1.0 + limiter_margin()) / qps
    assert elapsed <= calls * interval * 1.05, f"{calls} calls took {elapsed / interval:.0f} intervals"


def test_a_shared_acquire_returns_the_admission_time_on_the_runs_clock(tmp_path: Path) -> None:
    """SharedLimiter.acquire returns when the call starts on the limiter's own clock, as Limiter.acquire does
    (and as it did before groups): not Redis's clock, which callers cannot compare with theirs (the outage
    test in test_quota compares admissions with time.monotonic() marks)."""

    async def go(url: str) -> tuple[float, float, float]:
        store = RedisStore(url, "k")
        limiter = SharedLimiter(RateWindow(30), store)
        try:
            before = time.monotonic()
            admitted = await limiter.acquire()
            after = time.monotonic()
        finally:
            await store.aclose()
        return before, admitted, after

    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    with redis_server(tmp_path) as server:
        before, admitted, after = anyio.run(go, server.url)
    assert before <= admitted <= after + GROUP_S


def test_a_run_sharing_the_quota_survives_a_lost_slot_and_a_stop_inside_a_group(tmp_path: Path) -> None:
    """A run at a fast pace through the host file: the 3rd confirmation comes too late (the store's clock
    jumps past the hold, so that call and the rest of its group each take a fresh slot) and a stop comes at
    the 6th; every call made settled, each at most once, none left marked as being sent, the rest pending."""
    from snapbatch.emulator import EmulatorConfig
    from snapbatch.manifest.expand import expand, fingerprint
    from snapbatch.manifest.load import load_manifest
    from snapbatch.run.quota import HOLD_S, Reservation
    from snapbatch.run.runner import RunOptions, RunResult, run_batch
    from snapbatch.run.state import State
    from snapbatch.vod.client import VodClient
    from snapbatch.vod.credentials import Credentials
    from tests.emulated import AK_ID, AK_SECRET, running
    from tests.test_run import _manifest

    clock = [1000.0]
    stop = anyio.Event()

    async def sleep(seconds: float) -> None:
        clock[0] += seconds
        await anyio.lowlevel.checkpoint()

    class Jumpy:
        def __init__(self, inner: HostFileStore) -> None:
            self.inner, self.name, self.confirms = inner, inner.name, 0

        async def reserve(self, window_s: float, interval_s: float, cap: int) -> Reservation:
            return await self.inner.reserve(window_s, interval_s, cap)

        async def confirm(self, reservation: Reservation) -> float | None:
            self.confirms += 1
            if self.confirms == 3:
                clock[0] += HOLD_S + 0.1
            if self.confirms == 6:
                stop.set()
            return await self.inner.confirm(reservation)

        async def aclose(self) -> None:
            await self.inner.aclose()

    manifest = load_manifest(_manifest(tmp_path, 200), {})
    state = State(tmp_path / "s.sqlite3")
    state.ingest(expand(manifest), fingerprint(manifest), manifest.batch)

    async def go() -> tuple[RunResult, SharedLimiter]:
        store = Jumpy(HostFileStore(tmp_path / "q", clock=lambda: clock[0]))
        limiter = SharedLimiter(RateWindow(1_000_000), store, clock=lambda: clock[0], sleep=sleep)
        try:
            with anyio.fail_after(60):
                async with VodClient(emu.url, Credentials(AK_ID, AK_SECRET), max_connections=16) as client:
                    result = await run_batch(state, client, limiter, RunOptions(concurrency=16), stop=stop)
        finally:
            await store.aclose()
        return result, limiter

    try:
        with running(EmulatorConfig(qps=1_000_000)) as emu:
            result, limiter = anyio.run(go)
            calls = emu.emulator.calls
        videos = [c["params"]["VideoId"] for c in calls if c.get("outcome") == "accepted"]
        counts = state.counts()
        assert len(videos) == len(set(videos)) == result.calls == result.submitted == counts["submitted"]
        assert counts["sending"] == 0 and counts["pending"] == 200 - result.submitted
        assert limiter.missed >= 1 and result.stop_reason == "interrupted"
    finally:
        state.close()


def test_a_reservation_left_from_a_group_before_a_pause_is_not_a_missed_slot(tmp_path: Path) -> None:
    """The reservation a group could not use waits for the next admission; when that comes only after a pause
    (a second here, the run waiting for retries), it is dropped quietly: not counted as a slot the run missed,
    which five in a row would report as a store too slow to hold slots."""
    clock = [100.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    async def go() -> tuple[int, int]:
        store = HostFileStore(tmp_path / "k", clock=lambda: clock[0])
        limiter = SharedLimiter(RateWindow(1100.0), store, clock=lambda: clock[0], sleep=sleep)
        try:
            await limiter.acquire_many(1)  # a fresh file: the first slot is a window away
            grouped = len(await limiter.acquire_many(16))  # ends at a reservation past GROUP_S, kept
            clock[0] += 1.0
            await limiter.acquire_many(1)
        finally:
            await store.aclose()
        return grouped, limiter.missed

    grouped, missed = anyio.run(go)
    assert 1 <= grouped < 16 and missed == 0
