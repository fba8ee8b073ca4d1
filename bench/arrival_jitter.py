"""Arrival jitter at the emulator: how much later than the limiter admitted it does each call reach the server?

    python bench/arrival_jitter.py [CALLS] [REPEATS]

Calls are paced at 30/s by snapbatch's own Limiter with no margin, sent by snapbatch's VodClient to a
`snapbatch emulator` process (its own GIL and event loop, as a real server), and matched by VideoId. Both
sides read CLOCK_MONOTONIC, which is one clock for the whole host, so delay = arrival - admission exactly.
Scenarios: fresh connections (a client of its own per call, built beforehand: TCP connect included) and
reused ones (one warmed-up client), with short (20-80 ms) and long (0.8-1.5 s) answers, and "mixed": one
cold client, as a real run starts (the first ~45 calls open connections, then they are reused: where throttles used to
happen). The margin a window of 1 s + m must cover is max over i of delay[i] - delay[i + 30]: the call
that opens a window arriving late and the one that closes it arriving early. The table shows, over all
repeats, delay percentiles and that needed margin.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _emulator import KEY_ID, KEY_SECRET, emulator
from _measure import table

from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials

QPS = 30
CAP = 30


async def _send(url: str, n: int, tag: str, *, fresh: bool, warm: bool) -> dict[str, float]:
    """Admit ``n`` calls at QPS with no margin and send each; return VideoId -> admission time."""
    creds = Credentials(KEY_ID, KEY_SECRET)
    admitted: dict[str, float] = {}
    limiter = Limiter(RateWindow(QPS, margin_s=0.0))
    async with VodClient(url, creds, max_connections=128) as shared, anyio.create_task_group() as tg:
        if warm:  # open (and keep) enough connections for the calls in flight
            async with anyio.create_task_group() as warmup:
                for i in range(60):
                    warmup.start_soon(shared.submit, {"VideoId": f"warm-{tag}-{i}", "Count": "1"})

        # built before the clock starts: building a client costs far more CPU than opening a connection
        own = [VodClient(url, creds, max_connections=1) for _ in range(n)] if fresh else []

        async def one(i: int, video: str) -> None:
            if fresh:
                async with own[i]:
                    await own[i].submit({"VideoId": video, "Count": "1"})
            else:
                await shared.submit({"VideoId": video, "Count": "1"})

        for i in range(n):
            video = f"{tag}-{i:05d}"
            admitted[video] = await limiter.acquire()
            tg.start_soon(one, i, video)
    return admitted


def _needed_margin(delays: list[float]) -> float:
    return max((a - b for a, b in zip(delays, delays[CAP:], strict=False)), default=0.0)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    scenarios = [
        ("fresh connections, short answers", (20, 80), True, False),
        ("reused connections, short answers", (20, 80), False, True),
        ("fresh connections, long answers", (800, 1500), True, False),
        ("reused connections, long answers", (800, 1500), False, True),
        ("mixed: one cold client, long answers", (800, 1500), False, False),
        ("mixed: one cold client, short answers", (20, 80), False, False),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (low, high), fresh, warm in scenarios:
            all_delays: list[float] = []
            needed: list[float] = []
            for r in range(repeats):
                with emulator(Path(tmp), "--qps", "1000", "--latency-ms", str(low), str(high)) as served:
                    tag = f"r{r}"
                    admitted = anyio.run(lambda: _send(served.url, n, tag, fresh=fresh, warm=warm))  # noqa: B023
                    time.sleep(0.2)  # the emulator logs each call as it handles it; let the last lines land
                    arrivals = {c["params"]["VideoId"]: c["mono"] for c in served.calls()}
                delays = [arrivals[v] - admitted[v] for v in sorted(admitted)]
                all_delays += delays
                needed.append(_needed_margin(delays))
            q = statistics.quantiles(all_delays, n=100)
            rows.append(
                [
                    name,
                    str(len(all_delays)),
                    f"{min(all_delays) * 1000:.2f}",
                    f"{q[49] * 1000:.2f}",
                    f"{q[98] * 1000:.2f}",
                    f"{max(all_delays) * 1000:.2f}",
                    f"{max(needed) * 1000:.2f}",
                ]
            )
    print(
        table(
            ["scenario", "calls", "min ms", "p50 ms", "p99 ms", "max ms", "margin needed ms (worst repeat)"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
