"""The shared quota: one pacing sequence per key, in a host file or in Redis, with the limiter's guarantee."""

from __future__ import annotations

import heapq
import itertools
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapbatch.emulator import busiest_window
from snapbatch.errors import UsageError
from snapbatch.run.limiter import DEFAULT_MARGIN_S, RateWindow
from snapbatch.run.quota import (
    HOLD_S,
    HostFileStore,
    QuotaUnavailable,
    RedisStore,
    Reservation,
    SharedLimiter,
    SlotStore,
    StoreUnavailable,
    describe,
    next_slot,
    resolve_quota,
)
from tests.redis_server import RedisServer, redis_server

W = 1.0 + DEFAULT_MARGIN_S


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 4),
    st.floats(1, 60),
    st.lists(st.floats(0, 0.3), min_size=1, max_size=20),
    st.lists(st.floats(0, 0.05), min_size=1, max_size=20),
    st.lists(st.integers(0, 400), max_size=3),
)
def test_runs_sharing_a_host_file_keep_the_guarantee_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    runs: int,
    qps: float,
    lateness: list[float],
    gaps: list[float],
    deaths: list[int],
) -> None:
    """Runs interleaving on one host file (an injected clock; wake-ups late by up to 300 ms, beyond HOLD_S
    too; runs killed between reserving and starting): of the starts the store recorded, never more than
    floor(qps) within any 1 s + margin. Slow: generated examples of up to 300 steps, each a real locked file read and
    rewritten."""
    clock = [0.0]
    store = HostFileStore(tmp_path_factory.mktemp("q") / "k.json", clock=lambda: clock[0])
    cap, interval = max(1, math.floor(qps)), W / qps
    recorded: list[float] = []

    async def go() -> None:
        events: list[tuple[float, int, int, str]] = [(0.0, r, 0, "reserve") for r in range(runs)]
        pending: dict[int, tuple[Reservation, float]] = {}
        step = 0
        while events and step < 300:
            at, r, _, action = heapq.heappop(events)
            clock[0] = max(clock[0], at)
            step += 1
            if action == "reserve":
                reservation = await store.reserve(W, interval, cap)
                slot = clock[0] + reservation.delay_s
                pending[r] = (reservation, slot)
                if step in deaths:
                    continue  # killed before it could start: never confirms
                heapq.heappush(events, (slot + lateness[step % len(lateness)], r, step, "start"))
            else:
                reservation, slot = pending.pop(r)
                if clock[0] - slot <= HOLD_S:
                    start = await store.confirm(reservation)
                    assert start is not None  # on time: within HOLD_S of its slot
                    recorded.append(start)
                heapq.heappush(events, (clock[0] + gaps[step % len(gaps)], r, step, "reserve"))

    anyio.run(go)
    assert busiest_window(recorded, W - 1e-9) <= cap  # exact but for float rounding


def test_a_killed_run_frees_its_share_at_once(tmp_path: Path) -> None:
    """A run killed after reserving holds one slot and nothing more: the other run's slots follow at the
    full rate, one interval apart, but for one pause of at most HOLD_S (the dead reservation counts as a call
    started as late as it could have)."""
    clock = [10.0]
    store = HostFileStore(tmp_path / "k.json", clock=lambda: clock[0])

    async def go() -> list[float]:
        await store.reserve(W, W / 30, 30)  # the run that is then killed
        slots = []
        for _ in range(60):
            r = await store.reserve(W, W / 30, 30)
            clock[0] += r.delay_s
            slots.append(clock[0])
            await store.confirm(r)
        return slots

    slots = anyio.run(go)
    assert math.isclose(slots[0] - 10.0, W / 30)
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    longer = [g for g in gaps if not math.isclose(g, W / 30)]
    assert len(longer) <= 1 and all(g <= W / 30 + HOLD_S + 1e-9 for g in longer)


def test_next_slot_counts_the_capth_latest_start_in_any_order() -> None:
    """Starts recorded out of order (a late confirm): the slot follows the cap-th latest, not the cap-th last."""
    assert next_slot(5.0, None, [4.9, 4.0, 4.5], 1.0, 0.1, 2) == 4.5 + 1.0
    assert next_slot(5.0, 5.2, [], 1.0, 0.1, 2) == 5.3
    assert next_slot(5.0, None, [4.9], 1.0, 0.1, 2) == 5.0


@pytest.mark.parametrize(("qps", "step_s", "bound"), [(100, 0.0, 150), (1_000_000, 0.001, 1_400)])
def test_the_host_file_stays_bounded_whatever_the_rate(tmp_path: Path, qps: float, step_s: float, bound: int) -> None:
    """Thousands of calls on an injected clock, at the full rate of qps 100 and at 1,000 calls/s under a
    lifted limit (qps 1,000,000): the host file keeps about ``cap`` reservations, or those of the last
    1.3 s when fewer, so it stops growing (each call reads and writes that much, not the run's history),
    and the starts it recorded still keep the guarantee."""
    clock = [100.0]
    path = tmp_path / "k.json"
    store = HostFileStore(path, clock=lambda: clock[0])
    window_s = W
    cap = max(1, math.floor(qps))
    sizes: list[int] = []
    recorded: list[float] = []

    async def go() -> None:
        for _ in range(6000):
            reservation = await store.reserve(window_s, window_s / qps, cap)
            clock[0] += reservation.delay_s
            start = await store.confirm(reservation)
            assert start is not None
            recorded.append(start)
            sizes.append(path.stat().st_size)
            clock[0] += step_s

    anyio.run(go)
    entries = 8 + 8 + 1  # slot, start, confirmed: the file's bytes for one reservation
    assert max(sizes[3000:]) <= max(sizes[:3000])  # it stopped growing
    assert max(sizes) <= 128 + bound * entries
    assert busiest_window(recorded, window_s - 1e-9) <= cap


async def _share(store_for: list[SlotStore], per_run: int, qps: float) -> list[SharedLimiter]:
    limiters = [SharedLimiter(RateWindow(qps), store) for store in store_for]
    async with anyio.create_task_group() as tg:
        for limiter in limiters:

            async def loop(limiter: SharedLimiter = limiter) -> None:
                for _ in range(per_run):
                    await limiter.acquire()

            tg.start_soon(loop)
    return limiters


@pytest.mark.parametrize("backend", ["host-file", "redis"])
def test_three_runs_share_one_sequence(backend: str, tmp_path: Path) -> None:
    """Three limiters on one key, on the real clock, through the host file or a real redis-server: each gets
    all its calls, and the starts the store recorded (on its own clock) never exceed floor(qps) in any
    1 s + margin. Slow by nature: 90 admissions at 50/s on the real clock (about 2 s)."""

    async def go(url: str | None) -> list[SharedLimiter]:
        if url is None:
            stores: list[SlotStore] = [HostFileStore(tmp_path / "k.json") for _ in range(3)]
        else:
            stores = [RedisStore(url, "k") for _ in range(3)]
        try:
            return await _share(stores, 30, 50)
        finally:
            for store in stores:
                await store.aclose()

    if backend == "redis":
        with redis_server(tmp_path) as server:
            limiters = anyio.run(go, server.url)
    else:
        limiters = anyio.run(go, None)
    recorded = sorted(t for limiter in limiters for t in limiter.recorded)
    assert [limiter.admitted for limiter in limiters] == [30, 30, 30]
    assert len(recorded) == 90 and busiest_window(recorded, W) <= 50


def test_redis_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    """Redis killed while two runs share it: both stop admitting calls (and say so) until it is back (at
    most the one call whose answer from Redis was already on its way gets through), then both go on; across
    the restart (Redis comes back empty) the recorded starts keep the guarantee. Slow by nature: 120 admissions at
    40/s on the real clock, a redis-server restart and the first window after it."""
    down: list[anyio.Event] = []
    back: list[anyio.Event] = []

    def notice(i: int, problem: str | None) -> None:
        (down if problem is not None else back)[i].set()

    async def go(server: RedisServer) -> tuple[list[SharedLimiter], list[float], list[float]]:
        down[:] = [anyio.Event(), anyio.Event()]
        back[:] = [anyio.Event(), anyio.Event()]
        stores = [RedisStore(server.url, "k"), RedisStore(server.url, "k")]
        limiters = [
            SharedLimiter(RateWindow(40), stores[i], on_store=partial(notice, i), outage_s=120) for i in range(2)
        ]
        killed = anyio.Event()
        admitted: list[float] = []
        marks: list[float] = []

        async def loop(limiter: SharedLimiter) -> None:
            while len(admitted) < 120:
                admitted.append(await limiter.acquire())
                if len(admitted) >= 40 and not killed.is_set():
                    killed.set()
                    server.kill()
                    marks.append(time.monotonic())

        async def chaos() -> None:
            await killed.wait()
            for event in down:
                await event.wait()
            marks.append(time.monotonic())  # restarting from here on
            await anyio.to_thread.run_sync(server.start)

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(chaos)
                for limiter in limiters:
                    tg.start_soon(loop, limiter)
        for store in stores:
            await store.aclose()
        return limiters, admitted, marks

    with redis_server(tmp_path) as server:
        limiters, admitted, (killed_at, restarting_at) = anyio.run(go, server)
    assert sum(1 for t in admitted if killed_at < t < restarting_at) <= 1
    assert all(event.is_set() for event in back) and all(limiter.outages >= 1 for limiter in limiters)
    assert all(limiter.admitted > 0 for limiter in limiters)
    recorded = sorted(t for limiter in limiters for t in limiter.recorded)
    assert busiest_window(recorded, W - 1e-9) <= 40


def test_an_unreachable_redis_stops_sending_then_gives_up() -> None:
    """Nothing listening at the Redis address: no call is admitted, the problem is reported once, the
    connection is retried with growing pauses, and after the bound the limiter raises QuotaUnavailable."""
    clock = [0.0]
    pauses: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    heard: list[str | None] = []

    async def go() -> None:
        store = RedisStore("redis://127.0.0.1:1/0", "k", timeout_s=0.2)
        limiter = SharedLimiter(
            RateWindow(30),
            store,
            clock=lambda: clock[0],
            sleep=fake_sleep,
            on_store=heard.append,
            outage_s=30,
            rng=random.Random(1),
        )
        try:
            with pytest.raises(QuotaUnavailable, match=r"redis://127\.0\.0\.1:1/0 has been unreachable for 30 s"):
                await limiter.acquire()
        finally:
            await store.aclose()
        assert limiter.admitted == 0

    anyio.run(go)
    assert len(heard) == 1 and heard[0] is not None and "127.0.0.1:1" in heard[0]
    assert pauses[0] < pauses[3] <= 2.0 and math.isclose(clock[0], 30.0)


def test_quota_setting_precedence_and_validation() -> None:
    """--quota wins over SNAPBATCH_QUOTA, which wins over the manifest; the default is local; anything but
    local, off or a redis:// URL is refused with what to give; a password never shows."""
    assert resolve_quota(None, None, None) == "local"
    assert resolve_quota(None, None, "off") == "off"
    assert resolve_quota(None, "redis://r:6379/2", "off") == "redis://r:6379/2"
    assert resolve_quota("local", "redis://r:6379/2", "off") == "local"
    with pytest.raises(UsageError, match="SNAPBATCH_QUOTA is 'shared': give local"):
        resolve_quota(None, "shared", None)
    with pytest.raises(UsageError) as refused:
        resolve_quota("http://user:hunter2@host:1/0", None, None)
    assert "hunter2" not in str(refused.value)
    assert describe("redis://user:hunter2@cache.internal:6380/3") == "redis://cache.internal:6380/3"


def test_redis_sequence_that_starts_afresh_waits_one_window(tmp_path: Path) -> None:
    """On Redis's own clock: a key with no history (new, or Redis restarted empty) gives its first slot one
    window from now, since calls made before cannot be seen; then slots follow the window arithmetic: with
    cap 3 and no spacing, the 4th slot is one window after the 1st start, whatever the machines' clocks."""

    async def go(url: str) -> tuple[list[float], float]:
        store = RedisStore(url, "fresh")
        try:
            delays = []
            for _ in range(4):
                reservation = await store.reserve(1.0, 0.0, 3)
                delays.append(reservation.delay_s)
                if len(delays) < 4:
                    await store.confirm(reservation)
            return delays, 0.0
        finally:
            await store.aclose()

    with redis_server(tmp_path) as server:
        delays, _ = anyio.run(go, server.url)
        assert delays[0] == 1.0  # exact: integer microseconds on one clock
        assert delays[1] < 1.0 and delays[2] < 1.0
        server.kill()
        server.start()
        after, _ = anyio.run(go, server.url)
    assert after[0] == 1.0
    assert 1.0 < delays[3] <= 2.0  # the 1st start (1 s ahead) + a window, less the little time since


def test_a_run_stalled_past_its_slot_never_starts_later_than_the_store_counts(tmp_path: Path) -> None:
    """A run whose intent commit (or event loop) stalls 1 s between its slot and its confirmation does not start
    on that stale reservation: the store counted it as starting HOLD_S after its slot at the latest, so the
    run reserves again and starts exactly when the store records (else others' slots, computed from that
    record, could crowd the real start)."""
    clock = [50.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    async def stall() -> None:
        clock[0] += 1.0

    async def go() -> tuple[float, int]:
        store = HostFileStore(tmp_path / "k.json", clock=lambda: clock[0])
        limiter = SharedLimiter(RateWindow(30), store, clock=lambda: clock[0], sleep=sleep)
        await limiter.acquire()
        start = await limiter.acquire(before=stall)
        await store.aclose()
        return start - limiter.recorded[-1], limiter.missed

    late_by, missed = anyio.run(go)
    assert abs(late_by) <= 1e-9 and missed == 1


def test_a_store_too_slow_to_hold_a_slot_is_an_outage_not_a_silent_stall(tmp_path: Path) -> None:
    """A store whose every answer takes longer than HOLD_S (a slow Redis, say) loses every slot: after a few
    in a row the run hears that sending has stopped, and past the outage bound it stops with
    QuotaUnavailable (exit 5), instead of sending nothing forever without a word."""
    clock = [10.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds
        await anyio.lowlevel.checkpoint()  # so the hang guard below can fire on a store that stalls forever

    class SlowStore(HostFileStore):  # the real host-file store, answering each reservation late
        async def reserve(self, window_s: float, interval_s: float, cap: int) -> Reservation:
            reservation = await super().reserve(window_s, interval_s, cap)
            clock[0] += HOLD_S + 0.1
            await anyio.lowlevel.checkpoint()
            return reservation

    heard: list[str | None] = []

    async def go() -> str:
        store = SlowStore(tmp_path / "k.json", clock=lambda: clock[0])
        limiter = SharedLimiter(
            RateWindow(30), store, clock=lambda: clock[0], sleep=sleep, on_store=heard.append, outage_s=30.0
        )
        try:
            with pytest.raises(QuotaUnavailable) as stopped, anyio.fail_after(20):  # a hang guard, not a timing
                await limiter.acquire()
            return str(stopped.value)
        finally:
            await store.aclose()

    message = anyio.run(go)
    assert heard and heard[0] is not None and "too slowly" in heard[0]
    assert "unreachable for" in message and "too slowly" in message


def test_redis_refuses_a_confirmation_later_than_the_hold(tmp_path: Path) -> None:
    """On Redis's clock: a reservation confirmed more than HOLD_S after its slot is refused (None), as is one
    Redis no longer holds (flushed), so the caller reserves again instead of starting unrecorded or late."""

    async def go(url: str) -> tuple[float | None, float | None]:
        store = RedisStore(url, "late")
        try:
            first = await store.reserve(1.0, 0.0, 30)  # a fresh sequence: slot one window ahead
            on_time = await store.reserve(1.0, 0.0, 30)
            await anyio.sleep(first.delay_s + HOLD_S + 0.05)  # Redis's clock passes the hold, for certain
            late = await store.confirm(first)
            await store._client.flushdb()
            return late, await store.confirm(on_time)
        finally:
            await store.aclose()

    with redis_server(tmp_path) as server:
        late, gone = anyio.run(go, server.url)
    assert late is None and gone is None


def test_a_failed_write_of_the_host_file_never_forgets_the_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write of the host file that fails (disk full, or the run killed mid-update) leaves the starts recorded
    before, or a file read as torn (first slot one window ahead), never an empty file read as a new key whose
    first slot is now while 30 calls were just made."""
    clock = [5.0]
    store = HostFileStore(tmp_path / "k.json", clock=lambda: clock[0])

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(28, "No space left on device")

    async def go() -> float:
        for _ in range(30):
            r = await store.reserve(W, 0.0, 30)
            await store.confirm(r)
        with monkeypatch.context() as patched:
            patched.setattr("snapbatch.run.quota.os.pwrite", full)
            with pytest.raises(StoreUnavailable):
                await store.reserve(W, 0.0, 30)
        return (await store.reserve(W, 0.0, 30)).delay_s

    assert anyio.run(go) >= W - 1e-9


@pytest.mark.parametrize(
    "url", ["redis://:hunt/er2@cache:6379/0", "redis://:hunt#er2@cache:6379/0", "redis://:hunt?er2@h/0"]
)
def test_a_quota_url_whose_password_breaks_the_syntax_is_refused_without_showing_it(url: str) -> None:
    """A password with an unencoded / # or ? splits the URL elsewhere (urlsplit then reads part of it as a port
    or a path): the URL is refused as a usage error that shows no part of the password, and describe never
    raises (its ValueError once named the password's first characters as a port)."""
    with pytest.raises(UsageError) as refused:
        resolve_quota(url, None, None)
    shown = str(refused.value) + describe(url)
    assert "hunt" not in shown and "er2" not in shown
    assert "percent-encode" in str(refused.value)


def test_a_reservation_from_before_a_reset_never_confirms_a_new_one(tmp_path: Path) -> None:
    """The host file starts afresh (torn) between a run's reservation and its confirmation, in processes whose
    `random` was seeded alike (a library caller's random.seed): the stale reservation is refused, never taken
    for the new sequence's reservation of the same number, whose later slot it would then claim."""
    clock = [10.0]
    path = tmp_path / "k.json"
    store = HostFileStore(path, clock=lambda: clock[0])

    async def go() -> tuple[Reservation, Reservation, float | None]:
        random.seed(1)
        stale = await store.reserve(W, W / 30, 30)
        path.write_bytes(path.read_bytes()[:-5])  # torn: its own format, cut short
        random.seed(1)
        fresh = await store.reserve(W, W / 30, 30)
        clock[0] += fresh.delay_s
        return stale, fresh, await store.confirm(stale)

    stale, fresh, confirmed = anyio.run(go)
    assert stale.id != fresh.id and confirmed is None


async def _interleave(
    clock: list[float],
    stores: dict[int, tuple[HostFileStore, float]],
    steps: int,
    recorded: dict[int, list[float]],
    disrupt: tuple[int, Callable[[], dict[int, tuple[HostFileStore, float]]]] | None = None,
    window_s: dict[int, float] | None = None,
) -> None:
    """Runs (store, qps) at their full rate on an injected clock, each reserving again as soon as it started.
    ``disrupt`` (step, act): right after the first confirmation of run 0 from that step on, ``act`` runs and
    may add runs, which reserve only after run 0's next operation."""
    events: list[tuple[float, int, int, str]] = [(clock[0], r, 0, "reserve") for r in stores]
    pending: dict[int, tuple[Reservation, float]] = {}
    for step in range(1, steps + 1):
        at, r, _, action = heapq.heappop(events)
        clock[0] = max(clock[0], at)
        store, qps = stores[r]
        w = (window_s or {}).get(r, W)
        if action == "reserve":
            reservation = await store.reserve(w, w / qps, max(1, math.floor(qps)))
            slot = clock[0] + reservation.delay_s
            pending[r] = (reservation, slot)
            heapq.heappush(events, (slot, r, step, "start"))
            continue
        reservation, _slot = pending.pop(r)
        start = await store.confirm(reservation)
        if start is not None:
            recorded.setdefault(r, []).append(start)
        heapq.heappush(events, (clock[0], r, step, "reserve"))
        if disrupt is not None and r == 0 and step >= disrupt[0]:
            joining = disrupt[1]()
            disrupt = None
            stores.update(joining)
            events.extend((clock[0] + 1e-6, j, step, "reserve") for j in joining)
            heapq.heapify(events)


@pytest.mark.parametrize("disruption", ["deleted", "directory deleted", "replaced by an old copy"])
@pytest.mark.parametrize("second", ["open before", "started after"])
def test_a_host_file_deleted_or_replaced_mid_run_is_reopened(tmp_path: Path, disruption: str, second: str) -> None:
    """The host file deleted (a cache cleaner, file or directory) or replaced by another file while a run uses it:
    the runs already going move to the file the path names at their next operation, so they and a run started
    afterwards pace against one file (its reservations hold the latest start of each), and the starts of all
    runs never exceed floor(qps) in any 1 s + margin, across the move too (a run that moves to a file without
    its own recent starts makes the next slot wait a window)."""
    clock = [100.0]
    path = tmp_path / "quota" / "k.json"
    stores = {0: (HostFileStore(path, clock=lambda: clock[0]), 30.0)}
    if second == "open before":
        stores[1] = (HostFileStore(path, clock=lambda: clock[0]), 30.0)
    old_copy = tmp_path / "old"
    recorded: dict[int, list[float]] = {}

    def act() -> dict[int, tuple[HostFileStore, float]]:
        if disruption == "deleted":
            path.unlink()
        elif disruption == "directory deleted":
            shutil.rmtree(path.parent)
        else:
            os.replace(old_copy, path)
        if second == "started after":
            return {1: (HostFileStore(path, clock=lambda: clock[0]), 30.0)}
        return {}

    async def go() -> None:
        await _interleave(clock, stores, 40, recorded)
        old_copy.write_bytes(path.read_bytes())  # a valid file, but without the starts made from now on
        await _interleave(clock, stores, 40, recorded, disrupt=(1, act))
        await _interleave(clock, stores, 200, recorded)

    anyio.run(go)
    held = set(HostFileStore.confirmed_starts(path).values())
    assert recorded[0][-1] in held and recorded[1][-1] in held
    assert len(recorded[1]) > 30  # the run started afterwards did get its share
    everything = [t for starts in recorded.values() for t in starts]
    assert busiest_window(everything, W - 1e-9) <= 30


def test_a_lower_qps_run_keeps_what_a_higher_qps_run_on_the_key_needs(tmp_path: Path) -> None:
    """A run at qps 40 then one reservation of a run at qps 30 on the same host file: the file still holds the
    40 latest starts the qps-40 run's next slot is reckoned from (the qps-30 run once cut it to what its own
    cap needs), and once the qps-40 run has not reserved for longer than any of its reservations can stay in
    the file, the qps-30 run's reservations cut it back to about 30."""
    clock = [100.0]
    path = tmp_path / "k.json"
    fast = HostFileStore(path, clock=lambda: clock[0])
    slow = HostFileStore(path, clock=lambda: clock[0])
    recorded: dict[int, list[float]] = {}

    async def go() -> int:
        await _interleave(clock, {0: (fast, 40.0)}, 120, recorded)
        await slow.reserve(W, W / 30, 30)
        held = set(HostFileStore.confirmed_starts(path).values())
        assert set(recorded[0][-40:]) <= held
        clock[0] += 2.0
        await _interleave(clock, {1: (slow, 30.0)}, 120, recorded)
        return len(HostFileStore.confirmed_starts(path))

    assert anyio.run(go) <= 30 + 8  # the cap, and those within HOLD_S before the cap-th latest slot


@settings(max_examples=150, deadline=None)
@given(
    st.floats(0.0, 0.035),
    st.lists(st.floats(0, 0.3), min_size=1, max_size=12),
    st.lists(st.floats(0, 0.4), min_size=1, max_size=12),
)
def test_runs_asking_different_qps_on_one_host_file_keep_the_highest_ones_guarantee(
    tmp_path_factory: pytest.TempPathFactory, wider_s: float, lateness: list[float], gaps: list[float]
) -> None:
    """A qps-40 run (its margin up to 35 ms wider, as learned from throttles) and a qps-30 run on one host file,
    wake-ups late by up to 300 ms, pauses between calls: of the starts the store recorded, never more than 40
    within any of the qps-40 run's windows. Slow: 300 steps of a real locked file per example."""
    clock = [0.0]
    path = tmp_path_factory.mktemp("q") / "k.json"
    stores = [HostFileStore(path, clock=lambda: clock[0]) for _ in range(2)]
    qps, windows = (40.0, 30.0), (W + wider_s, W)
    recorded: list[float] = []

    async def go() -> None:
        events: list[tuple[float, int, int, str]] = [(0.0, r, 0, "reserve") for r in range(2)]
        pending: dict[int, tuple[Reservation, float]] = {}
        for step in range(300):
            at, r, _, action = heapq.heappop(events)
            clock[0] = max(clock[0], at)
            if action == "reserve":
                reservation = await stores[r].reserve(windows[r], windows[r] / qps[r], math.floor(qps[r]))
                slot = clock[0] + reservation.delay_s
                pending[r] = (reservation, slot)
                heapq.heappush(events, (slot + lateness[step % len(lateness)], r, step, "start"))
            else:
                reservation, slot = pending.pop(r)
                if clock[0] - slot <= HOLD_S:
                    start = await stores[r].confirm(reservation)
                    assert start is not None
                    recorded.append(start)
                heapq.heappush(events, (clock[0] + gaps[step % len(gaps)] * (r + 1), r, step, "reserve"))

    anyio.run(go)
    assert busiest_window(recorded, windows[0] - 1e-9) <= 40


def test_the_host_file_is_cut_only_when_it_gets_shorter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At qps 30, then at 1,000 calls/s under a lifted limit, then after a pause: the file is truncated only by
    operations that leave it shorter (pwrite extends it by itself), far fewer than there are operations, and
    after every one it reads back whole (no stale tail)."""
    clock = [100.0]
    path = tmp_path / "k.json"
    store = HostFileStore(path, clock=lambda: clock[0])
    cuts: list[tuple[int, int]] = []
    real_ftruncate = os.ftruncate

    def ftruncate(fd: int, length: int) -> None:
        cuts.append((os.fstat(fd).st_size, length))
        real_ftruncate(fd, length)

    monkeypatch.setattr("snapbatch.run.quota.os.ftruncate", ftruncate)

    async def go() -> int:
        operations = 0
        for qps, step_s, pairs in ((30.0, 0.0, 100), (1_000_000.0, 0.001, 2000), (30.0, 0.0, 100)):
            clock[0] += 1.0
            for _ in range(pairs):
                reservation = await store.reserve(W, W / qps, max(1, math.floor(qps)))
                clock[0] += reservation.delay_s
                assert await store.confirm(reservation) is not None
                assert HostFileStore.confirmed_starts(path)
                operations += 2
                clock[0] += step_s
        return operations

    operations = anyio.run(go)
    assert cuts and all(length < size for size, length in cuts)
    assert len(cuts) < operations / 10


def test_a_cut_of_the_host_file_that_fails_leaves_it_torn_not_forgetful(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operation that leaves the file shorter but fails (or is killed) between writing and cutting it leaves
    the new bytes followed by the old tail: read as torn (the next slot waits a window), never as a valid file
    without the starts it held."""
    clock = [5.0]
    path = tmp_path / "k.json"
    store = HostFileStore(path, clock=lambda: clock[0])

    def fail(fd: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    async def go() -> tuple[int, int, float]:
        for _ in range(60):
            r = await store.reserve(W, W / 30, 30)
            clock[0] += r.delay_s
            await store.confirm(r)
        before = path.stat().st_size
        clock[0] += 1.0  # the oldest reservations drop off by age: the file gets shorter
        with monkeypatch.context() as patched:
            patched.setattr("snapbatch.run.quota.os.ftruncate", fail)
            with pytest.raises(StoreUnavailable):
                await store.reserve(W, W / 30, 30)
        after = path.stat().st_size
        return before, after, (await store.reserve(W, W / 30, 30)).delay_s

    before, after, delay = anyio.run(go)
    assert after == before  # written over but not cut: the old tail is still there
    assert delay >= W - 1e-9


def test_runs_that_move_off_a_deleted_host_file_wait_one_window_between_them_not_one_each(tmp_path: Path) -> None:
    """Two runs on a host file that is deleted: the first to move waits a window (its recent starts are not in
    the new file); the second, whose starts all came before that window, follows it one interval later instead
    of waiting a window of its own; and a run idle longer than any window moves without waiting at all."""
    clock = [100.0]
    path = tmp_path / "k.json"
    first, second = (HostFileStore(path, clock=lambda: clock[0]) for _ in range(2))
    stores = {0: (first, 30.0), 1: (second, 30.0)}

    async def pair(store: HostFileStore) -> float:
        reservation = await store.reserve(W, W / 30, 30)
        clock[0] += reservation.delay_s
        assert await store.confirm(reservation) is not None
        return clock[0]

    async def go() -> tuple[float, float, float, float]:
        await _interleave(clock, stores, 80, {})
        path.unlink()
        deleted_at = clock[0]
        first_slot = await pair(first)
        second_slot = await pair(second)
        path.unlink()
        clock[0] += 2.0
        idle_at = clock[0]
        return deleted_at, first_slot, second_slot, await pair(first) - idle_at

    deleted_at, first_slot, second_slot, idle_wait = anyio.run(go)
    assert first_slot >= deleted_at + W
    assert math.isclose(second_slot - first_slot, W / 30)
    assert idle_wait == 0.0


@pytest.mark.parametrize("foreign", [b"SBQ2" + bytes(120), b'{"last": 12.5, "starts": [12.0, 12.5]}'])
def test_a_host_file_another_version_is_writing_is_waited_for_then_taken_over(tmp_path: Path, foreign: bytes) -> None:
    """A host file in another snapbatch version's format (an older run's, during an upgrade) written within the
    keep horizon is in use: reserving is refused as an unreachable store (the run waits, says why, and stops
    after --quota-wait) and the file is left as it is. Resetting it instead threw that run's reservations away,
    and it reset ours in turn: neither ever started a call. A file no one has written for longer is taken over
    like a torn one (the first slot a window ahead)."""
    path = tmp_path / "k.json"
    path.write_bytes(foreign)
    written = path.stat().st_mtime
    wall = [written + 1.0]
    store = HostFileStore(path, clock=lambda: 10.0, wall_clock=lambda: wall[0])

    async def go() -> tuple[str, float]:
        try:
            with pytest.raises(StoreUnavailable) as refused:
                await store.reserve(W, W / 30, 30)
            assert path.read_bytes() == foreign
            wall[0] = written + 5.0  # nobody has written it for 5 s: its run is gone
            return str(refused.value), (await store.reserve(W, W / 30, 30)).delay_s
        finally:
            await store.aclose()

    message, delay = anyio.run(go)
    assert "another snapbatch version" in message and "--quota-wait" in message
    assert delay >= W - 1e-9
