"""The SnapshotComplete receiver under a backlog redelivery: events/s recorded and the receiver's memory.

    python bench/receiver.py [EVENTS] [CONNECTIONS]      # defaults: 1,000,000 events over 64 connections

A `snapbatch receive` process with an auth key; a load generator (raw HTTP/1.1 keep-alive over anyio, so
that the generator is not the bottleneck) posts signed SnapshotComplete events, each a distinct job, as fast
as the receiver answers. Every answer must be 200 (each one means "on disk"). Prints the rate per tenth of
the run and the receiver's RSS at that point (memory flat: no per-event state is kept), then checks that
the store holds every event.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _measure import table

KEY = "BenchAuthKey2026"
PUBLIC_URL = "https://hooks.example.test/vod/events"
PUBLIC = ("--public-url", PUBLIC_URL)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(n: int, port: int) -> bytes:
    body = json.dumps(
        {
            "EventTime": "2026-11-27T01:00:00Z",
            "EventType": "SnapshotComplete",
            "SubType": "SpecifiedTime",
            "VideoId": f"{n:032x}",
            "Status": "success",
            "Extend": json.dumps({"snapbatch": f"{n:024x}"}),
            "SnapshotInfos": [
                {
                    "JobId": f"{n:032x}",
                    "Status": "success",
                    "SnapshotType": "NormalSnapshot",
                    "SnapshotCount": 10,
                    "SnapshotRegular": f"https://outin.example/{n:032x}/normal-{{SnapshotCount}}.jpg",
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    stamp = str(int(time.time()))
    signature = hashlib.md5(f"{PUBLIC_URL}|{stamp}|{KEY}".encode()).hexdigest()
    head = (
        f"POST /vod/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-VOD-TIMESTAMP: {stamp}\r\nX-VOD-SIGNATURE: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def load(port: int, total: int, connections: int, pid: int) -> tuple[list[list[str]], list[float]]:
    latencies: list[float] = []  # seconds from sending an event to its 200 (the service allows 5)
    next_n = 0
    done = 0
    marks: list[list[str]] = []
    started = last_t = time.perf_counter()
    last_done = 0
    step = max(1, total // 10)

    async def worker() -> None:
        nonlocal next_n, done, last_t, last_done
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            buffer = b""
            while next_n < total:
                n = next_n
                next_n += 1
                data = request(n, port)
                sent = time.perf_counter()
                await stream.send(data)
                while b"\r\n\r\n" not in buffer or not buffer.split(b"\r\n\r\n", 1)[1].startswith(b"ok\n"):
                    buffer += await stream.receive()
                    if b"\r\n\r\n" in buffer and not buffer.startswith(b"HTTP/1.1 200"):
                        raise SystemExit(f"not 200: {buffer[:80]!r}")
                buffer = buffer.split(b"ok\n", 1)[1]
                latencies.append(time.perf_counter() - sent)
                done += 1
                if done % step == 0:
                    now = time.perf_counter()
                    rate = (done - last_done) / (now - last_t)
                    marks.append([f"{done:,}", f"{rate:,.0f}", f"{rss_mb(pid):.1f}"])
                    print(f"  {done:,} answered, {rate:,.0f}/s, receiver RSS {marks[-1][2]} MB", flush=True)
                    last_t, last_done = now, done

    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(worker)
    elapsed = time.perf_counter() - started
    marks.append(["total", f"{total / elapsed:,.0f}", f"{rss_mb(pid):.1f}"])
    return marks, latencies


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "events.sqlite3"
        proc = subprocess.Popen(
            [sys.executable, "-m", "snapbatch", "receive", "--port", "0", "--events", str(store), *PUBLIC],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "SNAPBATCH_CALLBACK_AUTH_KEY": KEY},
        )
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        try:
            marks, latencies = anyio.run(load, port, total, connections, proc.pid)
            cpu = cpu_s(proc.pid)
        finally:
            proc.terminate()
            proc.wait()
            proc.stdout.close()
        with sqlite3.connect(store) as db:
            stored = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    print(f"snapbatch receive: {total:,} signed events over {connections} keep-alive connections (200 = on disk)")
    print(table(["events answered", "events/s (this tenth)", "receiver RSS MB"], marks))
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    print(f"time to 200: median {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    print(f"receiver CPU: {cpu:.1f} s, {cpu / total * 1000:.3f} ms an event (one core: {total / cpu:,.0f} events/s)")
    print(f"events in the store: {stored:,} of {total:,}")
    if stored != total:
        raise SystemExit("events missing from the store")


if __name__ == "__main__":
    main()
