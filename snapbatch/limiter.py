"""The rate limiter: pure arithmetic on an injected clock (RateWindow), and a thin anyio wrapper (Limiter).

Guarantee: of the calls it admits, never more than floor(qps) (at least 1) start within any window of
1 s + margin, and consecutive calls are at least (1 s + margin) / rate apart. The margin absorbs the
jitter between the moment a call is admitted and the moment it reaches the server; evenly spaced calls
leave no burst at the start and none after a pause, unlike a token bucket.
Throttling answers cut the rate multiplicatively (at most once a second); it then grows back by a tenth
of qps per second.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

__all__ = ["DEFAULT_MARGIN_S", "Limiter", "LimiterStatistics", "RateWindow"]

DEFAULT_MARGIN_S = 0.006
_DECREASE = 0.7
_RECOVERY_PER_S = 0.1  # of qps
_FLOOR = 0.05  # of qps


class RateWindow:
    def __init__(self, qps: float, margin_s: float = DEFAULT_MARGIN_S) -> None:
        if not qps > 0:
            raise ValueError("qps must be positive")
        self.qps = qps
        self.margin_s = margin_s
        self.window_s = 1.0 + margin_s
        self.cap = max(1, math.floor(qps))
        self.recent: deque[float] = deque(maxlen=self.cap)
        self.last: float | None = None
        self.cut_rate = qps  # the rate right after the last cut
        self.cut_at: float | None = None

    def rate(self, now: float) -> float:
        """The current target rate: qps, or less while recovering from throttling."""
        if self.cut_at is None:
            return self.qps
        grown = self.cut_rate + _RECOVERY_PER_S * self.qps * max(0.0, now - self.cut_at)
        return min(self.qps, grown)

    def next_slot(self, now: float) -> float:
        """The earliest time at or after ``now`` when a call may start."""
        slot = now
        if self.last is not None:
            slot = max(slot, self.last + self.window_s / self.rate(now))
        if len(self.recent) == self.cap:
            slot = max(slot, self.recent[0] + self.window_s)
        return slot

    def admit(self, at: float, scheduled: float | None = None) -> None:
        """Record a call started at ``at`` (not before ``next_slot``). ``scheduled``, the slot it was due at,
        paces the next call, so timers that wake a little late do not slow the rate down; the window of
        recent calls keeps the real start times, so lateness never eats into the margin."""
        self.recent.append(at)
        self.last = at if scheduled is None else scheduled

    def throttled(self, now: float) -> bool:
        """The service throttled a call: cut the rate, once a second at most. True when it cut."""
        if self.cut_at is not None and now - self.cut_at < 1.0:
            return False
        self.cut_rate = max(self.qps * _FLOOR, self.rate(now) * _DECREASE)
        self.cut_at = now
        return True


@dataclass(frozen=True)
class LimiterStatistics:
    admitted: int
    cuts: int
    rate_per_s: float


class Limiter:
    """Admits callers one at a time at the RateWindow's pace."""

    def __init__(
        self,
        window: RateWindow,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.window, self.clock, self.sleep = window, clock, sleep
        self._lock = anyio.Lock()
        self.admitted = 0
        self.cuts = 0

    async def acquire(self) -> float:
        """Wait for a slot; return the admission time."""
        async with self._lock:
            now = self.clock()
            slot = self.window.next_slot(now)
            if slot > now:
                await self.sleep(slot - now)
                now = self.clock()
            # A wake-up much later than the slot (a busy loop) restarts the pace from now.
            self.window.admit(now, slot if now - slot <= self.window.margin_s else now)
            self.admitted += 1
            return now

    def throttled(self) -> None:
        if self.window.throttled(self.clock()):
            self.cuts += 1

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(self.admitted, self.cuts, self.window.rate(self.clock()))
