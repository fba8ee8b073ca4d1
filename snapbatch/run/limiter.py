"""The rate limiter: pure arithmetic on an injected clock (RateWindow), and a thin anyio wrapper (Limiter).

Guarantee: of the calls it admits, never more than floor(qps) (at least 1) start within any window of
1 s + margin, and consecutive calls are at least (1 s + margin) / rate apart (as recorded: at a pace of a
call every GROUP_S or faster, never at VOD's 30 calls/s, calls due within GROUP_S of each other are admitted
together and may leave up to GROUP_S before their recorded start). The margin absorbs the
jitter between the moment a call is admitted and the moment it reaches the server; evenly spaced calls
leave no burst at the start and none after a pause, unlike a token bucket.
Throttling answers say the server counted more than qps in some second. Each one widens the margin by
10 ms (up to 50 ms): over a real network, calls that left evenly spaced can arrive bunched, and a wider
margin absorbs that for good. The margin relaxes by 2 ms a minute without throttling. Throttles that keep
coming (3 within 10 s) mean someone else uses the quota: they also cut the rate multiplicatively (at
most once a second), and it grows back by a tenth of qps per second.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from snapbatch.models import MIN_QPS

__all__ = ["DEFAULT_MARGIN_S", "GROUP_S", "MAX_MARGIN_S", "Limiter", "LimiterStatistics", "RateWindow", "Started"]

# Measured (bench/arrival_jitter.py): with connections reused, as snapbatch's are once its pool has grown,
# 99% of calls reach the emulator within 14 ms of their admission on a loaded 2-core host, and 15 ms keeps
# 98.5% of qps. Rarer, wider bunching is what throttles teach (+10 ms each, kept across runs: margin.py).
DEFAULT_MARGIN_S = 0.015
_DECREASE = 0.7
_RECOVERY_PER_S = 0.1  # of qps
_FLOOR = 0.05  # of qps
_MARGIN_STEP_S = 0.01  # each throttle widens the margin by this much...
MAX_MARGIN_S = 0.05  # ...up to this,
_RELAX_PER_MIN_S = 0.002  # and it narrows by this much for each quiet minute
_SHARED_WINDOW_S = 10.0  # this many throttles within this many seconds cut the rate too
_SHARED_COUNT = 3
# At a pace of a call every millisecond or faster, the calls whose slots come within this of the first's are
# admitted with it: their intents go into one commit instead of one each (bench/runner_cost.py: the runner,
# limiter and state went from 0.28 to 0.15 ms of CPU a call).
# Far below the margin, so the server cannot tell them from calls sent on their slots.
GROUP_S = 0.001


class RateWindow:
    def __init__(
        self, qps: float, margin_s: float = DEFAULT_MARGIN_S, *, learned_s: float | None = None, now: float = 0.0
    ) -> None:
        """``learned_s``: the margin an earlier run ended with (see margin.py); it applies from ``now`` and
        relaxes over quiet minutes like one widened by a throttle."""
        if not MIN_QPS <= qps < math.inf:
            raise ValueError(f"qps must be at least {MIN_QPS:g} and finite, not {qps!r}")
        self.qps = qps
        self.base_margin_s = margin_s
        self.widened_s = margin_s  # the margin right after the last throttle (or the learned one)
        self.widened_at: float | None = None
        if learned_s is not None and learned_s > margin_s:
            self.widened_s, self.widened_at = min(learned_s, MAX_MARGIN_S), now
        self.cap = max(1, math.floor(qps))
        self.recent: deque[float] = deque(maxlen=self.cap)
        self.last: float | None = None
        self.cut_rate = qps  # the rate right after the last cut
        self.cut_at: float | None = None
        self.throttles: deque[float] = deque()  # recent throttles' times (within _SHARED_WINDOW_S of the last)

    def margin(self, now: float) -> float:
        """The current margin: the base one, or wider after throttling, relaxing back over quiet minutes."""
        if self.widened_at is None:
            return self.base_margin_s
        quiet_min = max(0.0, now - self.widened_at) / 60
        return max(self.base_margin_s, self.widened_s - _RELAX_PER_MIN_S * math.floor(quiet_min))

    def rate(self, now: float) -> float:
        """The current target rate: qps, or less while recovering from throttling."""
        if self.cut_at is None:
            return self.qps
        grown = self.cut_rate + _RECOVERY_PER_S * self.qps * max(0.0, now - self.cut_at)
        return min(self.qps, grown)

    def next_slot(self, now: float) -> float:
        """The earliest time at or after ``now`` when a call may start."""
        window_s = 1.0 + self.margin(now)
        slot = now
        if self.last is not None:
            slot = max(slot, self.last + window_s / self.rate(now))
        if len(self.recent) == self.cap:
            slot = max(slot, self.recent[0] + window_s)
        return slot

    def together(self, slot: float, now: float, most: int) -> list[float]:
        """The slots of up to ``most`` more calls that may be admitted with the one at ``slot``: none unless the
        pace is a call every GROUP_S or faster; else the slots that follow it, each as ``next_slot`` would give
        it with the calls before it recorded, as long as they come within GROUP_S of ``now``."""
        window_s = 1.0 + self.margin(now)
        interval = window_s / self.rate(now)
        if interval > GROUP_S:
            return []
        held = len(self.recent)  # starts recorded; then the call at ``slot``, then those taken here
        slots: list[float] = []
        last = slot
        while len(slots) < most:
            following = last + interval
            behind = held + 1 + len(slots) - self.cap  # where the cap-th latest start before it is
            if behind >= held:
                break  # one of this group's own: a window away
            if behind >= 0:
                following = max(following, self.recent[behind] + window_s)
            if following > now + GROUP_S:
                break
            slots.append(following)
            last = following
        return slots

    def admit(self, at: float, scheduled: float | None = None) -> None:
        """Record a call started at ``at`` (not before ``next_slot``). ``scheduled``, the slot it was due at,
        paces the next call, so timers that wake a little late do not slow the rate down; the window of
        recent calls keeps the real start times, so lateness never eats into the margin."""
        self.recent.append(at)
        self.last = at if scheduled is None else scheduled

    def throttled(self, now: float) -> bool:
        """The service throttled a call: widen the margin; when throttles keep coming, cut the rate too
        (once a second at most). True when it cut."""
        self.widened_s = min(max(self.widened_s, MAX_MARGIN_S), self.margin(now) + _MARGIN_STEP_S)
        self.widened_at = now
        while self.throttles and now - self.throttles[0] > _SHARED_WINDOW_S:
            self.throttles.popleft()
        self.throttles.append(now)
        if len(self.throttles) < _SHARED_COUNT or (self.cut_at is not None and now - self.cut_at < 1.0):
            return False
        self.cut_rate = max(self.qps * _FLOOR, self.rate(now) * _DECREASE)
        self.cut_at = now
        return True


Started = Callable[[int, float], None]
"""Told that the call at this index of a group may start now, and the time it was recorded as starting."""


@dataclass(frozen=True)
class LimiterStatistics:
    admitted: int
    cuts: int
    rate_per_s: float


class Limiter:
    """Admits callers at the RateWindow's pace: one at a time, or at a pace of a call every GROUP_S or faster, those
    due within GROUP_S of each other together (acquire_many)."""

    def __init__(
        self,
        window: RateWindow,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        on_throttled: Callable[[float], object] | None = None,
    ) -> None:
        """``on_throttled`` hears the margin after each throttle (margin.py keeps it for the next run)."""
        self.window, self.clock, self.sleep = window, clock, sleep
        self.on_throttled = on_throttled
        # Uncontended (one dispatcher), acquiring it need not yield to the loop: a turn of the loop a call saved
        self._lock = anyio.Lock(fast_acquire=True)
        self.admitted = 0
        self.cuts = 0

    async def acquire(self, before: Callable[[], Awaitable[None]] | None = None) -> float:
        """Wait for a slot; return the admission time. The wait may be cancelled (a stop need not sit out a
        slow rate's wait). ``before`` is awaited once the slot has come and before the admission is recorded:
        the run commits its intent there, so a request is marked as being sent only when its slot has come,
        and the window counts the call when it really starts."""
        times = await self.acquire_many(1, None if before is None else lambda count: before())
        return times[0]

    async def acquire_many(
        self, most: int, before: Callable[[int], Awaitable[None]] | None = None, started: Started | None = None
    ) -> list[float]:
        """As ``acquire``, for up to ``most`` calls: the first waits for its slot, and those whose slots come
        within GROUP_S of it at a fast enough pace come with it (RateWindow.together). ``before(n)`` is
        awaited once for the n calls; then each is recorded and ``started(i, at)`` told, in order, as it
        may start. Returns the n admission times."""
        async with self._lock:
            now = self.clock()
            slot = self.window.next_slot(now)
            if slot > now:
                await self.sleep(slot - now)
            woke = self.clock()
            # A wake-up much later than the slot (a busy loop) restarts the pace from now, and takes no calls
            # with it: the slots it missed are not made up in a burst. The time ``before`` took does not: the
            # window keeps the real start, so the pace may stay on its schedule.
            late = woke - slot > self.window.base_margin_s
            slots = [slot] if late else [slot, *self.window.together(slot, woke, most - 1)]
            if before is not None:
                await before(len(slots))
            now = self.clock()
            times = []
            for index, due in enumerate(slots):
                # the first's slot has come (a sleep's rounding aside); those taken with it: never before their own
                at = now if index == 0 else max(now, due)
                self.window.admit(at, at if late else due)
                self.admitted += 1
                times.append(at)
                if started is not None:
                    started(index, at)
            return times

    def throttled(self) -> None:
        now = self.clock()
        if self.window.throttled(now):
            self.cuts += 1
        if self.on_throttled is not None:
            self.on_throttled(self.window.margin(now))

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(self.admitted, self.cuts, self.window.rate(self.clock()))
