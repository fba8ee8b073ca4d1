"""The limiter's guarantee, on an injected clock."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from snapbatch.emulator import busiest_window
from snapbatch.run.limiter import DEFAULT_MARGIN_S, MAX_MARGIN_S, Limiter, RateWindow
from snapbatch.run.margin import MarginStore, cache_dir


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.2, 200),
    st.lists(st.floats(0, 0.5), min_size=1, max_size=300),
    st.lists(st.integers(0, 299), max_size=5),
)
def test_never_more_than_qps_in_any_window(qps: float, arrivals: list[float], throttles: list[int]) -> None:
    """Whatever the callers' timing and throttling, admissions in any 1 s window <= max(1, floor(qps))."""
    window = RateWindow(qps)
    now, admitted = 0.0, []
    for i, gap in enumerate(arrivals):
        now += gap
        now = max(now, window.next_slot(now))
        window.admit(now)
        admitted.append(now)
        if i in throttles:
            window.throttled(now)
    assert busiest_window(admitted, 1.0) <= max(1, math.floor(qps))
    assert all(b - a >= 1.0 / qps - 1e-9 for a, b in itertools.pairwise(admitted))


def test_no_burst_at_start_and_full_rate_when_busy() -> None:
    """Eager callers are spaced evenly from the first call: no burst, and qps / (1 s + the base margin)
    sustained (98.5% of qps)."""
    window = RateWindow(30)
    now, admitted = 0.0, []
    for _ in range(301):
        now = window.next_slot(now)
        window.admit(now)
        admitted.append(now)
    assert admitted[1] - admitted[0] > 1 / 31
    rate = 300 / (admitted[-1] - admitted[0])
    assert math.isclose(rate, 30 / (1 + DEFAULT_MARGIN_S))


def test_throttles_that_keep_coming_cut_the_rate_then_it_recovers() -> None:
    """The third throttle within 10 s means a shared quota: it cuts the rate by 30% (once a second at
    most); the rate is back to qps about 3 s later."""
    window = RateWindow(30)
    assert not window.throttled(8.0) and not window.throttled(9.0)
    assert window.rate(9.5) == 30.0
    assert window.throttled(10.0)
    assert not window.throttled(10.5)
    assert math.isclose(window.rate(10.0), 21.0)
    assert 21.0 < window.rate(11.0) < 30.0
    assert window.rate(13.1) == 30.0


def test_a_lone_throttle_widens_the_margin_which_relaxes_when_quiet() -> None:
    """A throttle with no others near it (calls bunched on their way to the server) leaves the rate alone
    but widens the margin by 10 ms, up to 50 ms; each quiet minute narrows it by 2 ms, down to the base."""
    window = RateWindow(30)
    assert window.margin(0.0) == DEFAULT_MARGIN_S
    assert not window.throttled(100.0)
    assert window.rate(100.0) == 30.0 and math.isclose(window.margin(100.0), DEFAULT_MARGIN_S + 0.01)
    for t in range(11):  # far enough apart never to count as a shared quota
        window.throttled(120.0 + 11 * t)
    assert window.rate(231.0) == 30.0 and math.isclose(window.margin(230.0), 0.05)
    slot = window.next_slot(231.0)
    window.admit(slot)
    assert math.isclose(window.next_slot(slot) - slot, 1.05 / 30)  # the pace follows the wider window
    assert math.isclose(window.margin(230.0 + 60 * 5), 0.05 - 5 * 0.002)
    assert window.margin(230.0 + 3600) == DEFAULT_MARGIN_S


def test_async_limiter_sleeps_on_the_injected_clock() -> None:
    """The anyio wrapper sleeps exactly until the next slot of its clock and counts admissions."""
    clock = [0.0]

    async def fake_sleep(seconds: float) -> None:
        clock[0] += seconds

    async def go() -> list[float]:
        limiter = Limiter(RateWindow(10), clock=lambda: clock[0], sleep=fake_sleep)
        times = [await limiter.acquire() for _ in range(21)]
        assert limiter.statistics().admitted == 21
        return times

    times = anyio.run(go)
    assert busiest_window(times, 1.0) <= 10
    assert 1.99 < times[-1] < 2.2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 0.004), min_size=100, max_size=300))
def test_late_wakeups_never_eat_the_margin(lateness: list[float]) -> None:
    """Calls that start up to 4 ms after their slot still leave the full margin in every window of real
    start times, and lateness costs the pace no more than itself: 30 calls never span more than
    1 s + margin + twice the worst lateness (the call that opens the window and the one that closes it). Slow: 200
    generated runs of up to 300 calls, every window checked."""
    window = RateWindow(30)
    now, starts = 0.0, []
    for late in lateness:
        slot = window.next_slot(now)
        now = slot + late
        window.admit(now, slot)
        starts.append(now)
    window_s = 1.0 + window.margin(now)
    assert all(b - a >= window_s - 1e-9 for a, b in zip(starts, starts[30:], strict=False))
    worst = max(lateness)
    assert all(b - a <= window_s + 2 * worst + 1e-9 for a, b in zip(starts, starts[30:], strict=False))


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0.5, 120),
    st.lists(st.tuples(st.floats(0, 0.2), st.floats(0, 0.02), st.booleans()), min_size=1, max_size=250),
    st.one_of(st.none(), st.floats(0, 0.2)),
)
def test_admitted_start_times_keep_the_guarantee_exactly(
    qps: float, calls: list[tuple[float, float, bool]], learned: float | None
) -> None:
    """On an injected clock, with callers arriving at any time, timers waking up to 20 ms late, throttles
    anywhere and any learned margin: of the start times acquire() returns, never more than max(1, floor(qps))
    fall in any window of 1 s + the margin in force when the last of them started (so never more in any
    1 s + base margin window either)."""
    clock = [0.0]
    lateness = [0.0]

    async def late_sleep(seconds: float) -> None:
        clock[0] += seconds + lateness[0]

    async def go() -> list[tuple[float, float]]:
        limiter = Limiter(RateWindow(qps, learned_s=learned, now=0.0), clock=lambda: clock[0], sleep=late_sleep)
        starts: list[tuple[float, float]] = []
        for gap, late, throttle in calls:
            clock[0] += gap
            lateness[0] = late
            start = await limiter.acquire()
            assert start == clock[0]
            starts.append((start, limiter.window.margin(start)))
            if throttle:
                limiter.throttled()
        return starts

    assert_the_window_guarantee(anyio.run(go), qps)


def assert_the_window_guarantee(starts: list[tuple[float, float]], qps: float) -> None:
    """Of the (start, margin in force) recorded, in order: never more than max(1, floor(qps)) in any window of
    1 s + the margin in force when the last of them started, so never more in any 1 s + base margin window."""
    cap = max(1, math.floor(qps))
    times = [t for t, _ in starts]
    assert times == sorted(times)
    for i in range(cap, len(starts)):
        assert times[i] - times[i - cap] >= 1.0 + starts[i][1] - 1e-9
    # less a nanosecond, as above: starts exactly one window apart may differ by one float rounding
    assert busiest_window(times, 1.0 + DEFAULT_MARGIN_S - 1e-9) <= cap


def test_a_learned_margin_applies_from_the_start_then_relaxes() -> None:
    """A margin kept from an earlier run paces the first calls with it, relaxes by 2 ms a quiet minute down to
    the base, and a learned margin no wider than the base changes nothing."""
    window = RateWindow(30, learned_s=0.026, now=100.0)
    assert math.isclose(window.margin(100.0), 0.026)
    window.admit(100.0)
    assert math.isclose(window.next_slot(100.0) - 100.0, 1.026 / 30)
    assert math.isclose(window.margin(100.0 + 5 * 60), 0.016)
    assert window.margin(100.0 + 3600) == DEFAULT_MARGIN_S
    assert RateWindow(30, learned_s=0.0).margin(0.0) == DEFAULT_MARGIN_S
    assert RateWindow(30, learned_s=9.0).margin(0.0) == MAX_MARGIN_S


def test_margin_store_keeps_the_margin_per_endpoint_and_key(tmp_path: Path) -> None:
    """What one run saves the next run on the same endpoint and key reads; another key or endpoint reads
    nothing; the file name shows neither the key id nor the endpoint; a corrupt file reads as nothing."""
    store = MarginStore(tmp_path, "https://vod.cn-shanghai.aliyuncs.com", "LTAI5tExampleKeyId")
    assert store.load() is None
    assert store.save(0.016)
    assert MarginStore(tmp_path, "https://vod.cn-shanghai.aliyuncs.com/", "LTAI5tExampleKeyId").load() == 0.016
    assert MarginStore(tmp_path, "https://vod.cn-shanghai.aliyuncs.com", "LTAI5tOtherKeyId").load() is None
    assert MarginStore(tmp_path, "https://vod.cn-beijing.aliyuncs.com", "LTAI5tExampleKeyId").load() is None
    assert "LTAI5t" not in store.path.name and "aliyuncs" not in store.path.name
    store.path.write_text("{not json")
    assert store.load() is None
    store.path.write_text('{"margin_s": -1}')
    assert store.load() is None


def test_cache_dir_follows_xdg_then_home() -> None:
    """$XDG_CACHE_HOME/snapbatch when it is an absolute path, else ~/.cache/snapbatch."""
    assert cache_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/h"}) == Path("/x/cache/snapbatch")
    assert cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/h"}) == Path("/h/.cache/snapbatch")
    assert cache_dir({"HOME": "/h"}) == Path("/h/.cache/snapbatch")
