"""One account's quota shared by several runs: one pacing sequence per (endpoint, AccessKeyId).

The limit is per account, so runs on one key must not each believe they own `qps`. They share one
sequence of slots instead, in a store every run on the key sees: a run reserves the next slot, waits
for it, records the moment it starts ("confirms"), and starts its call. Each reservation is checked, at
once and atomically, against every start recorded so far: a slot is at least 1 s + margin after the
floor(qps)-th latest of them, and at least (1 s + margin) / rate after the previous slot. A reservation
not yet confirmed counts as starting ``HOLD_S`` after its slot, the latest it may start: a run that
wakes later gives its slot up and reserves another. So, exactly as for one run's Limiter, never more
than floor(qps) admitted start times fall within any 1 s + margin, whichever runs they belong to.

Nothing is leased: a run that ends or is killed leaves at most one reservation behind, which counts as a
single call, and the other runs take every slot from the next one on. Runs that all want to send
reserve in turn, so overlapping runs split the rate evenly.

Stores: ``HostFileStore``, a small file under the cache directory locked with flock (same host, no setup,
on the host's monotonic clock), and ``RedisStore``, two Lua scripts on Redis's own clock (TIME), so runs
on machines whose clocks disagree still share one sequence. If the store cannot answer, the run sends
nothing (it never falls back to an unshared rate), retries with backoff, and gives up after a bound.

Runs that ask for different qps on one key: each reservation is checked against the caller's own qps
and margin over the shared starts, so a run asking less yields to the others and the server sees at most
the highest qps among the runs. The account has one limit: give every run on a key the same qps.
"""

from __future__ import annotations

import bisect
import fcntl
import math
import os
import random
import struct
import time
import zlib
from array import array
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio

from snapbatch.errors import UsageError
from snapbatch.run.limiter import GROUP_S, MAX_MARGIN_S, Limiter, RateWindow, Started
from snapbatch.run.margin import key_digest

__all__ = [
    "DEFAULT_OUTAGE_S",
    "HOLD_S",
    "HostFileStore",
    "Pacing",
    "QuotaUnavailable",
    "RedisStore",
    "Reservation",
    "SharedLimiter",
    "SlotStore",
    "StoreUnavailable",
    "describe",
    "next_slot",
    "open_limiter",
    "resolve_quota",
]

HOLD_S = 0.2  # a reservation is used within this of its slot, or given up
DEFAULT_OUTAGE_S = 60.0  # how long a run waits for an unreachable store before it stops (exit 5)
_KEEP_S = 1.0 + MAX_MARGIN_S + 0.05  # starts older than this can no longer constrain a slot (no window is longer)
_BACKOFF_FIRST_S, _BACKOFF_CAP_S = 0.1, 2.0


class StoreUnavailable(Exception):
    """The store did not answer (connection refused, timeout, an error reply); the message says which."""


class QuotaUnavailable(Exception):
    """The shared quota stayed unreachable longer than the run may wait: it stops sending for good."""


@dataclass(frozen=True)
class Reservation:
    id: str
    delay_s: float  # how far the slot was from the store's now when it was reserved


class SlotStore(Protocol):
    name: str  # for messages; never holds a password

    async def reserve(self, window_s: float, interval_s: float, cap: int) -> Reservation:
        """Reserve the next slot (see ``next_slot``), counting as starting HOLD_S after it until confirmed."""
        ...

    async def confirm(self, reservation: Reservation) -> float | None:
        """Record that the reserved call starts now; return the start recorded (on the store's clock), or None
        when it is too late: more than HOLD_S after the slot, or the store no longer holds the reservation
        (pruned, flushed). The store has counted it as starting by HOLD_S after its slot at the latest (or not
        at all), so starting on it now could crowd the calls others reserved since: reserve again."""
        ...

    async def aclose(self) -> None: ...


def next_slot(
    now: float, last: float | None, starts: Sequence[float], window_s: float, interval_s: float, cap: int
) -> float:
    """The shared sequence's arithmetic: at or after ``now``, ``interval_s`` after the ``last`` slot, and
    ``window_s`` after the ``cap``-th latest of the recorded ``starts`` (in any order)."""
    slot = now if last is None else max(now, last + interval_s)
    if len(starts) >= cap:
        slot = max(slot, sorted(starts, reverse=True)[cap - 1] + window_s)
    return slot


def _boot() -> str:
    """This boot of the machine: the monotonic clock's times are comparable only within one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: when the machine started, to the second (NTP may move it a little)
        return str(round(time.time() - time.monotonic()))


class HostFileStore:
    """Slots in a small binary file, read and written under an exclusive flock. The host's monotonic clock is
    one clock for every process on it; after a reboot it restarts, and times "in the future" are dropped.

    The file holds only what a slot can still depend on: the last slot, and each reservation's slot and the
    start it counts as (recorded, or HOLD_S after its slot until confirmed), in reservation order, so slots
    never decrease along it. Two kinds drop off its head: reservations whose start is older than ``_KEEP_S``
    (no window reaches that far back), and those at least HOLD_S before the ``cap``-th latest slot, which can
    never again be among the ``cap`` latest starts (each later slot, and so its start, is at or after theirs
    + HOLD_S). So the file stays at about ``cap`` reservations at full rate, whatever the rate, and each
    reservation or confirmation is one read and one write of it, with work done per entry only in C
    (copying arrays, a bisection, a sort of at most that many numbers). With mixed qps on the key it keeps
    what the largest cap reserved with lately needs (see ``_Sequence.claim``).

    Every operation first checks, under the lock, that the path still names the file it has open: a file
    deleted (a cache cleaner) or replaced while runs use it is reopened, so a run started afterwards, which
    opens the new file, and the runs already going pace against one file, never two."""

    def __init__(
        self, path: Path, clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time
    ) -> None:
        """``wall_clock``: what the file's modification time is compared with (another version's file in use)."""
        self.path, self.clock, self.wall_clock = path, clock, wall_clock
        self.name = f"the host file {path}"
        self._fd, self._file = self._open()
        self._boot = _boot().encode()[:_BOOT_BYTES]
        # this run's latest recorded start and the window it last reserved with: what a file it moves to lacks
        self._latest_start: float | None = None
        self._window_s = 0.0

    def _open(self) -> tuple[int, tuple[int, int]]:
        """The file the path names, opened (created if missing), and its identity (device, inode)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)  # a cache cleaner may have taken the directory too
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        held = os.fstat(fd)
        return fd, (held.st_dev, held.st_ino)

    async def reserve(self, window_s: float, interval_s: float, cap: int) -> Reservation:
        self._window_s = window_s
        async with self._locked(cap) as (now, seq):
            slot = next_slot(now, None if math.isnan(seq.last) else seq.last, seq.starts, window_s, interval_s, cap)
            if seq.reset:  # calls made before cannot be seen, but none is within a window of now + W
                slot = max(slot, now + window_s)
                seq.reset = False
            seq.claim(cap, slot, now)
            rid = seq.first + len(seq.slots)
            seq.slots.append(slot)
            seq.starts.append(slot + HOLD_S)
            seq.confirmed.append(0)
            seq.last = slot
            return Reservation(str(rid), slot - now)

    async def confirm(self, reservation: Reservation) -> float | None:
        async with self._locked(None) as (now, seq):
            index = int(reservation.id) - seq.first
            if not 0 <= index < len(seq.slots) or seq.confirmed[index]:
                return None  # pruned, or the file started afresh: it counts as starting HOLD_S after its slot
            slot = seq.slots[index]
            if now > slot + HOLD_S:
                return None  # too late: it stays counted as starting HOLD_S after its slot
            start = max(now, slot)
            seq.starts[index] = start
            seq.confirmed[index] = 1
            self._latest_start = start
            return start

    @asynccontextmanager
    async def _locked(self, cap: int | None) -> AsyncIterator[tuple[float, _Sequence]]:
        moved = await self._lock()
        try:
            now = self.clock()
            seq, size = self._read(now)
            if moved and self._unseen(now, seq):
                # This run's starts of the last window are in the file it had, not in this one, so the next slot
                # waits a window, as after a torn file. Simpler than carrying them over, which would have to
                # merge them into another run's sequence (its order, its reservation ids), and a move is rare.
                seq.reset = True
            yield now, seq
            seq.prune(now, cap)
            # Write over the old bytes, then cut the tail if it got shorter (pwrite extends it itself): a write
            # that fails or is cut short (disk full, killed) leaves the old starts or a torn file (its length or
            # checksum fails: a reset), never an empty file read as a new key.
            data = seq.pack(self._boot)
            if os.pwrite(self._fd, data, 0) != len(data):
                raise OSError(f"short write of {len(data)} bytes")
            if len(data) < size:
                os.ftruncate(self._fd, len(data))
        except OSError as exc:
            raise StoreUnavailable(f"cannot update {self.path}: {exc}") from None
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    async def _lock(self) -> bool:
        """Lock the file the path names: True when that is no longer the file this store had (deleted or
        replaced meanwhile). Checked after locking, and again after reopening, until the two agree: a file
        unlinked or replaced while it waited for the lock is not the one other runs open now."""
        moved = False
        while True:
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:  # another run holds it for a few microseconds; never block the loop
                    await anyio.sleep(0.0002)
                except OSError as exc:
                    raise StoreUnavailable(f"cannot lock {self.path}: {exc}") from None
            try:
                try:
                    named = os.stat(self.path)
                    if (named.st_dev, named.st_ino) == self._file:
                        return moved
                except FileNotFoundError:
                    pass
                fd, file = self._open()
            except OSError as exc:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                raise StoreUnavailable(f"cannot reopen {self.path}: {exc}") from None
            os.close(self._fd)  # closing drops its lock too
            self._fd, self._file, moved = fd, file, True

    def _unseen(self, now: float, seq: _Sequence) -> bool:
        """Whether this run may have starts in the last window that the file it moved to does not hold: it
        started something within the longest window, and the file's last slot is not a window past it (which
        another run that moved to it first, from the same deleted file, set by its own reset)."""
        if self._latest_start is None or now - self._latest_start >= _KEEP_S:
            return False
        return math.isnan(seq.last) or seq.last < self._latest_start + self._window_s

    def _read(self, now: float) -> tuple[_Sequence, int]:
        """The sequence the file holds and the file's size."""
        raw = os.pread(self._fd, 1 << 16, 0)
        if not raw:
            return _Sequence.fresh(reset=False), 0  # a new file: no run has used it
        if len(raw) == 1 << 16:  # more than a full-rate file at a few thousand calls/s: read it all
            raw += os.pread(self._fd, os.fstat(self._fd).st_size, len(raw))
        seq = _Sequence.unpack(raw, self._boot)
        if seq is None:
            if raw[:4] != _MAGIC and abs(self.wall_clock() - os.fstat(self._fd).st_mtime) < _KEEP_S + HOLD_S:
                # Another snapbatch version's format, written moments ago: a run of it is going. Starting afresh
                # would throw its reservations away (and it ours, each reading the other's file as foreign:
                # neither would ever start a call). Wait for it instead, as for a store that does not answer.
                raise StoreUnavailable(
                    f"{self.path} is in use by a run of another snapbatch version (another file format): this run "
                    "waits for it to end (up to --quota-wait); run one version on a host at a time"
                )
            # torn, from before a reboot, or another version's file no run uses any more: start afresh
            return _Sequence.fresh(reset=True), len(raw)
        return seq, len(raw)

    async def aclose(self) -> None:
        os.close(self._fd)

    @staticmethod
    def confirmed_starts(path: Path) -> dict[int, float]:
        """For tests and benches watching runs from outside: the starts a host file holds, by reservation id
        (only those confirmed); empty when the file is missing, torn or from before a reboot. Reads without
        the lock, so a run is never held up by the watcher (a read that overlaps a write is torn: empty)."""
        try:
            raw = path.read_bytes()
        except OSError:
            return {}
        seq = _Sequence.unpack(raw, _boot().encode()[:_BOOT_BYTES])
        if seq is None:
            return {}
        return {seq.first + i: start for i, start in enumerate(seq.starts) if seq.confirmed[i]}


# magic, checksum of what follows it, boot id, last slot (NaN: none), first reservation id, entries, the
# largest cap reserved with lately and the slot it was last reserved for (NaN: none), and whether the
# sequence started afresh and no slot was reserved since (that first slot waits a window)
_HEADER = struct.Struct("<4sI40sdqqqd?")
_MAGIC = b"SBQ3"  # SBQ2 files (no largest cap) read as foreign: a reset
_BOOT_BYTES = 40
_ENTRY_BYTES = 8 + 8 + 1  # slot, start as counted, confirmed


@dataclass
class _Sequence:
    """The host file's content: reservation ``first + i`` has slot ``slots[i]`` and counts as starting at
    ``starts[i]`` (HOLD_S after its slot until ``confirmed[i]``). ``reset``: the file was found torn, foreign or
    from before a reboot, or a run moved to it from a deleted one, and the next slot must wait a window (kept
    until a reservation has done so). ``max_cap``: the largest cap reserved with lately, last for the slot
    ``max_cap_at``."""

    last: float
    first: int
    slots: array[float]
    starts: array[float]
    confirmed: bytearray
    max_cap: int = 0
    max_cap_at: float = math.nan
    reset: bool = False

    @classmethod
    def fresh(cls, *, reset: bool) -> _Sequence:
        # Ids start at random, so a reservation made before the file started afresh never matches a new one: from
        # the OS, since processes whose `random` was seeded alike would otherwise start two sequences at one id.
        first = int.from_bytes(os.urandom(6), "little")
        return cls(math.nan, first, array("d"), array("d"), bytearray(), reset=reset)

    @classmethod
    def unpack(cls, raw: bytes, boot: bytes) -> _Sequence | None:
        if len(raw) < _HEADER.size:
            return None
        magic, checksum, file_boot, last, first, count, max_cap, max_cap_at, reset = _HEADER.unpack_from(raw)
        body = memoryview(raw)[_HEADER.size :]
        if magic != _MAGIC or len(body) != count * _ENTRY_BYTES or zlib.crc32(raw[8:]) != checksum:
            return None
        if file_boot.rstrip(b"\0") != boot:  # the monotonic clock restarted with the machine
            return None
        slots, starts = array("d"), array("d")
        slots.frombytes(body[: 8 * count])
        starts.frombytes(body[8 * count : 16 * count])
        return cls(last, first, slots, starts, bytearray(body[16 * count :]), max_cap, max_cap_at, reset)

    def claim(self, cap: int, slot: float, now: float) -> None:
        """A reservation with ``cap`` for ``slot``: the file keeps the ``cap`` latest starts while any of this
        reservation's own can still be in it (``_KEEP_S`` + HOLD_S after its slot), whatever smaller cap the runs
        that reserve meanwhile give, so a run with a larger qps always finds what its next slot depends on.
        After that, a run that has not reserved for so long left no reservation to keep: the cap is the largest
        one given since."""
        if cap >= self.max_cap or not now <= self.max_cap_at + _KEEP_S + HOLD_S:
            self.max_cap, self.max_cap_at = cap, slot

    def prune(self, now: float, cap: int | None) -> None:
        """Drop what no slot can depend on any more (see HostFileStore); ``cap`` None: only what is too old."""
        drop = bisect.bisect_left(self.slots, now - _KEEP_S - HOLD_S)
        if cap is not None and now <= self.max_cap_at + _KEEP_S + HOLD_S:
            cap = max(cap, self.max_cap)
        if cap is not None and len(self.slots) > cap:
            behind = bisect.bisect_right(self.slots, self.slots[-cap] - HOLD_S)
            # but never a reservation that may still be confirmed: its run would have to give its slot up
            live = self.confirmed.find(0, bisect.bisect_left(self.slots, now - HOLD_S))
            drop = max(drop, behind if live < 0 else min(behind, live))
        if drop:
            del self.slots[:drop], self.starts[:drop], self.confirmed[:drop]
            self.first += drop

    def pack(self, boot: bytes) -> bytes:
        rest = b"".join(
            (
                _HEADER.pack(
                    _MAGIC,
                    0,
                    boot,
                    self.last,
                    self.first,
                    len(self.slots),
                    self.max_cap,
                    self.max_cap_at,
                    self.reset,
                )[8:],
                self.slots.tobytes(),
                self.starts.tobytes(),
                self.confirmed,
            )
        )
        return _MAGIC + struct.pack("<I", zlib.crc32(rest)) + rest


# Integer microseconds throughout: exact in Lua's doubles. One hash per key, so that it expires or is
# evicted whole: "_last" (the last slot), "_next" (the reservation counter) and reservation id -> start.
# A hash without "_next" is a sequence that starts afresh (a new key, or Redis restarted without its data):
# calls made before that cannot be seen, but they were all admitted before it, so a first slot one window
# from now is safe whatever they were.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window, interval, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hold, keep = tonumber(ARGV[4]), tonumber(ARGV[5])
local slot = now
local flat = redis.call('HGETALL', KEYS[1])
local starts = {}
local last = nil
for i = 1, #flat, 2 do
  local field, value = flat[i], tonumber(flat[i + 1])
  if field == '_last' then
    last = value
  elseif field ~= '_next' then
    if value < now - keep then redis.call('HDEL', KEYS[1], field) else starts[#starts + 1] = value end
  end
end
local id = redis.call('HINCRBY', KEYS[1], '_next', 1)
if id == 1 then slot = now + window end
if last and last + interval > slot then slot = last + interval end
if #starts >= cap then
  table.sort(starts, function(a, b) return a > b end)
  if starts[cap] + window > slot then slot = starts[cap] + window end
end
redis.call('HSET', KEYS[1], id, slot + hold, '_last', slot)
redis.call('PEXPIRE', KEYS[1], 60000)
return {id, slot - now}
"""

_CONFIRM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held then return false end
held = tonumber(held)
if now > held then return false end
local start = math.max(now, held - tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], ARGV[1], start)
return start
"""


class RedisStore:
    """Slots in Redis, reserved and confirmed by Lua scripts (atomic) that read Redis's own clock (TIME):
    the clocks of the machines sharing the quota never enter the arithmetic."""

    def __init__(self, url: str, digest: str, *, timeout_s: float = 0.5) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise UsageError(
                f"--quota {describe(url)} needs the Redis client: pip install 'snapbatch[redis]'"
            ) from None
        self.name = describe(url)
        self.timeout_s = timeout_s
        # no retries inside redis-py: SharedLimiter decides (it stops sending while Redis is away)
        self._client: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        self._reserve: Any = self._client.register_script(_RESERVE)
        self._confirm: Any = self._client.register_script(_CONFIRM)
        self._keys = [f"snapbatch:quota:{digest}"]

    async def reserve(self, window_s: float, interval_s: float, cap: int) -> Reservation:
        args = [round(window_s * 1e6), round(interval_s * 1e6), cap, round(HOLD_S * 1e6), round(_KEEP_S * 1e6)]
        rid, delay_us = await self._call(self._reserve, args)
        return Reservation(str(int(rid)), int(delay_us) / 1e6)

    async def confirm(self, reservation: Reservation) -> float | None:
        start = await self._call(self._confirm, [reservation.id, round(HOLD_S * 1e6)])
        return None if start is None else int(start) / 1e6

    async def _call(self, script: Any, args: list[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            with anyio.fail_after(self.timeout_s * 2):
                return await script(keys=self._keys, args=args)
        except TimeoutError:
            raise StoreUnavailable(f"{self.name} did not answer within {self.timeout_s * 2:g} s") from None
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        await self._client.aclose()


def describe(url: str) -> str:
    """A quota URL as it may be shown: scheme, host, port and database, never a user name or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if _malformed(url):  # what urlsplit took for a port or a path may be part of a password
        return f"{parts.scheme}://{host}(malformed)"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _malformed(url: str) -> bool:
    """A URL urlsplit cannot split safely: a password holding an unencoded / ? # or @ moves the split."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- raises ValueError for what is no port
    except ValueError:
        return True
    return "@" in parts.path or "@" in parts.query or "@" in parts.fragment


MISSED_IN_A_ROW = 5  # slots lost in a row before a slow store counts as unavailable


class SharedLimiter(Limiter):
    """A Limiter whose slots come from a SlotStore shared with the other runs on the key. Its own
    RateWindow still decides the margin (widened by throttles) and the rate (cut when throttles keep
    coming) it asks the shared sequence for."""

    def __init__(
        self,
        window: RateWindow,
        store: SlotStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        on_throttled: Callable[[float], object] | None = None,
        on_store: Callable[[str | None], None] = lambda message: None,
        outage_s: float = DEFAULT_OUTAGE_S,
        rng: random.Random | None = None,
    ) -> None:
        """``on_store`` hears why the store is unreachable (sending has stopped) and None once it is back."""
        super().__init__(window, clock=clock, sleep=sleep, on_throttled=on_throttled)
        self.store, self.on_store, self.outage_s = store, on_store, outage_s
        self.rng = rng or random.Random()
        self.missed = 0  # slots given up because the call could not start in time
        self.outages = 0
        # the latest starts the store recorded, on its clock (for tests and benches)
        self.recorded: deque[float] = deque(maxlen=100_000)
        self._down_since: float | None = None
        self._backoff_s = _BACKOFF_FIRST_S
        self._missed_in_a_row = 0
        # a reservation a group took but could not use (its slot a little later): the next admission's first
        self._spare: tuple[Reservation, float, float, float, float] | None = None

    async def acquire_many(
        self, most: int, before: Callable[[int], Awaitable[None]] | None = None, started: Started | None = None
    ) -> list[float]:
        """As Limiter.acquire_many: ``before(n)`` (the run's intents) is awaited once, when the first slot has
        come, before the store records any start; each call then starts as the store confirms its slot. A slot
        lost meanwhile (a slow commit, the store away) is replaced by a fresh one for that call alone. Returns
        the admission times on this run's clock."""
        async with self._lock:
            first, window_s, interval = await self._reserved()
            group = [first]
            if most > 1 and interval <= GROUP_S:
                group += await self._together(window_s, interval, most - 1)
            if before is not None:
                await before(len(group))
            times = []
            for index, reservation in enumerate(group):
                start = await self._confirmed(reservation)
                self.admitted += 1
                times.append(start)
                if started is not None:
                    started(index, start)
            return times

    async def _reserved(self) -> tuple[Reservation, float, float]:
        """A reservation whose slot has come (waited for), with the window and interval it was asked with: the
        one the last group left for later (see _together) if any, else a new one."""
        while True:
            if self._spare is not None:
                (reservation, now, received, window_s, interval), self._spare = self._spare, None
                if self.clock() - (now + reservation.delay_s) > HOLD_S:
                    continue  # left over from a group long ago (the run paused): not a slot this run missed
            else:
                now = self.clock()
                window_s = 1.0 + self.window.margin(now)
                interval = window_s / self.window.rate(now)
                try:
                    reservation = await self.store.reserve(window_s, interval, self.window.cap)
                except StoreUnavailable as exc:
                    await self._unavailable(str(exc))
                    continue
                received = self.clock()
            # The slot lies between now + delay and received + delay on this clock: wait for the latest it can
            # be, and use it only while that is within HOLD_S of the earliest.
            if reservation.delay_s > 0:
                await self.sleep(max(0.0, received + reservation.delay_s - self.clock()))
            if self.clock() - (now + reservation.delay_s) > HOLD_S:
                await self._missed()
                continue
            return reservation, window_s, interval

    async def _together(self, window_s: float, interval: float, most: int) -> list[Reservation]:
        """Up to ``most`` more reservations whose slots come within GROUP_S. The first that comes later is kept
        for the next admission (it is the next slot in the sequence), not dropped: a slot dropped is one the
        sequence counts but no call uses."""
        group: list[Reservation] = []
        while len(group) < most:
            now = self.clock()
            try:
                reservation = await self.store.reserve(window_s, interval, self.window.cap)
            except StoreUnavailable:
                break  # the calls taken so far go on; the next admission waits for the store as usual
            if reservation.delay_s > GROUP_S:
                self._spare = (reservation, now, self.clock(), window_s, interval)
                break
            group.append(reservation)
        return group

    async def _confirmed(self, reservation: Reservation) -> float:
        """The call's start on this run's clock, once the store has recorded it for ``reservation``, or, when
        that slot was lost, for a fresh one."""
        while True:
            start = self.clock()
            try:
                recorded = await self.store.confirm(reservation)
            except StoreUnavailable as exc:
                await self._unavailable(str(exc))
                recorded = None
            else:
                if recorded is None:  # stalled past the hold (e.g. a slow intent commit): the slot is gone
                    await self._missed()
            if recorded is not None:
                self.recorded.append(recorded)
                self._missed_in_a_row = 0
                if self._down_since is not None:
                    self._down_since, self._backoff_s = None, _BACKOFF_FIRST_S
                    self.on_store(None)
                return start
            reservation, _, _ = await self._reserved()

    async def _missed(self) -> None:
        """A slot given up. A store that answers slower than HOLD_S loses every slot: after a few in a row that
        is an outage like an unreachable one (pause, say so, exit 5 past the bound), never a silent stall."""
        self.missed += 1
        self._missed_in_a_row += 1
        if self._missed_in_a_row >= MISSED_IN_A_ROW:
            await self._unavailable(
                f"it answers too slowly to hold a slot: {self._missed_in_a_row} slots missed in a row"
            )

    async def _unavailable(self, problem: str) -> None:
        now = self.clock()
        if self._down_since is None:
            self._down_since = now
            self.outages += 1
            self.on_store(problem)
        down_s = now - self._down_since
        if down_s >= self.outage_s:
            raise QuotaUnavailable(
                f"the shared quota at {self.store.name} has been unreachable for {down_s:.0f} s ({problem})"
            )
        await self.sleep(min(self._backoff_s * self.rng.uniform(0.5, 1.0), self.outage_s - down_s))
        self._backoff_s = min(_BACKOFF_CAP_S, self._backoff_s * 2)


@dataclass(frozen=True)
class Pacing:
    """How a run paces: ``quota`` is "local" (share with runs on this host), "off" (alone) or a Redis URL;
    ``cache`` holds the learned margins and the host file (None: keep nothing); ``outage_s`` bounds the
    wait for an unreachable store."""

    quota: str = "local"
    cache: Path | None = None
    outage_s: float = DEFAULT_OUTAGE_S


def resolve_quota(flag: str | None, env_value: str | None, manifest_value: str | None) -> str:
    """--quota, else SNAPBATCH_QUOTA, else the manifest's `quota`, else "local"; refuses anything else."""
    for value, where in ((flag, "--quota"), (env_value, "SNAPBATCH_QUOTA"), (manifest_value, "the manifest's quota")):
        if not value:
            continue
        parts = urlsplit(value)
        if "://" in value and _malformed(value):
            raise UsageError(
                f"{where} is {describe(value)}, which cannot be read as a URL: percent-encode the password's "
                "reserved characters (/ ? # @ as %2F %3F %23 %40)"
            )
        if value in ("local", "off") or (parts.scheme in _REDIS_SCHEMES and parts.netloc):
            return value
        if parts.scheme == "unix" and parts.path:
            return value
        raise UsageError(
            f"{where} is {describe(value) if '://' in value else repr(value)}: give local (share with runs on "
            "this host), off (pace this run alone) or redis://HOST:PORT/DB"
        )
    return "local"


_REDIS_SCHEMES = ("redis", "rediss")


@asynccontextmanager
async def open_limiter(
    pacing: Pacing,
    window: RateWindow,
    endpoint: str,
    access_key_id: str,
    *,
    on_throttled: Callable[[float], object] | None = None,
    on_store: Callable[[str | None], None] = lambda message: None,
) -> AsyncIterator[Limiter]:
    """The limiter for a run: alone, or sharing the key's quota through the host file or Redis."""
    digest = key_digest(endpoint, access_key_id)
    store: SlotStore | None = None
    if pacing.quota == "local" and pacing.cache is not None:
        try:
            store = HostFileStore(pacing.cache / "quota" / f"{digest}.json")
        except OSError as exc:
            # Pacing alone here would be the unshared rate the shared quota exists to rule out: refuse instead.
            raise UsageError(
                f"cannot share the quota with other runs on this host: {exc}; set XDG_CACHE_HOME to a writable "
                "directory, or give --quota off to pace this run alone on purpose"
            ) from None
    elif pacing.quota not in ("local", "off"):
        store = RedisStore(pacing.quota, digest)
    if store is None:
        yield Limiter(window, on_throttled=on_throttled)
        return
    try:
        yield SharedLimiter(window, store, on_throttled=on_throttled, on_store=on_store, outage_s=pacing.outage_s)
    finally:
        with anyio.CancelScope(shield=True):
            await store.aclose()
