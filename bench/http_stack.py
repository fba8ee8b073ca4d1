"""Where the floor of a call's CPU is: the HTTP exchange alone, layer by layer, against the official SDK.

    python bench/http_stack.py [CALLS] [ROUNDS]

Each variant runs in a process of its own, 16 calls in flight against one emulator (query-only, limit
lifted), and reports the CPU seconds of CALLS calls after a warm-up of 100 (so start-up, imports and the
pool's first connections are not counted):

- official SDK, 16 threads: aliyun-python-sdk-core, as bench/client_cost.py runs it (signing included);
- httpx.AsyncClient.send: one request built and signed once, sent again and again through httpx's client
  layer (cookies, auth and redirect machinery, then the transport); the emulator answers each repeat with
  an error of about the same size as an acceptance, which is all the client sees of it;
- httpx transport: the same request through ``AsyncHTTPTransport.handle_async_request`` (httpcore's pool,
  h11, anyio), the layer under the client, which snapbatch calls;
- snapbatch VodClient.submit: snapbatch's own client, a request built and signed afresh for each call, its
  answer classified (no runner, no limiter, no state).

The httpx variants use pools of CONNECTIONS_PER_POOL connections side by side, as VodClient does.

The tools take turns over ROUNDS rounds; the table gives the median and the range in ms of CPU a call.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

VARIANTS = (
    "official SDK, 16 threads",
    "httpx.AsyncClient.send, 16 tasks",
    "httpx transport, 16 tasks",
    "snapbatch VodClient.submit, 16 tasks",
)
WARM_UP = 100
IN_FLIGHT = 16


def _sdk(url: str, n: int) -> float:
    from _emulator import KEY_ID, KEY_SECRET
    from baselines import sdk_thread_pool

    ids = [f"video-{i:06d}" for i in range(WARM_UP + n)]
    sdk_thread_pool(url, KEY_ID, KEY_SECRET, 1e9, IN_FLIGHT, ids[:WARM_UP])
    before = time.process_time()
    sdk_thread_pool(url, KEY_ID, KEY_SECRET, 1e9, IN_FLIGHT, ids[WARM_UP:])
    return time.process_time() - before


async def _in_flight(one: Callable[[int], Awaitable[None]], n: int) -> float:
    """CPU seconds of ``n`` calls of ``one(worker)`` by IN_FLIGHT workers, after WARM_UP of them."""
    import anyio

    async def share(count: int) -> None:
        left = [count]

        async def worker(index: int) -> None:
            while left[0] > 0:
                left[0] -= 1
                await one(index)

        async with anyio.create_task_group() as tg:
            for index in range(IN_FLIGHT):
                tg.start_soon(worker, index)

    await share(WARM_UP)
    before = time.process_time()
    await share(n)
    return time.process_time() - before


def _httpx(url: str, n: int, layer: str) -> float:
    import anyio
    import httpx
    from _emulator import KEY_ID, KEY_SECRET

    from snapbatch.vod.client import CONNECTIONS_PER_POOL, VodClient
    from snapbatch.vod.credentials import Credentials

    signed = VodClient(url, Credentials(KEY_ID, KEY_SECRET)).signed_request(
        "SubmitSnapshotJob", {"VideoId": "video-000000", "Count": "1"}
    )
    # pools of CONNECTIONS_PER_POOL side by side, as VodClient has them (one pool of 16 costs more: its
    # bookkeeping grows with the square of its connections); each worker keeps to one
    limits = httpx.Limits(max_connections=CONNECTIONS_PER_POOL, max_keepalive_connections=CONNECTIONS_PER_POOL)
    pools = IN_FLIGHT // CONNECTIONS_PER_POOL

    async def main() -> float:
        if layer == "client":
            clients = [httpx.AsyncClient(limits=limits, timeout=10.0) for _ in range(pools)]

            async def one(worker: int) -> None:
                response = await clients[worker % pools].send(signed)
                assert response.status_code < 500 and response.content

            try:
                return await _in_flight(one, n)
            finally:
                for client in clients:
                    await client.aclose()
        transports = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(pools)]

        async def one_raw(worker: int) -> None:
            response = await transports[worker % pools].handle_async_request(signed)
            try:
                assert response.status_code < 500 and await response.aread()
            finally:
                await response.aclose()

        try:
            return await _in_flight(one_raw, n)
        finally:
            for transport in transports:
                await transport.aclose()

    return anyio.run(main)


def _snapbatch(url: str, n: int) -> float:
    import anyio
    from _emulator import KEY_ID, KEY_SECRET

    from snapbatch.models import ACCEPTED
    from snapbatch.vod.client import VodClient
    from snapbatch.vod.credentials import Credentials

    async def main() -> float:
        async with VodClient(url, Credentials(KEY_ID, KEY_SECRET), max_connections=IN_FLIGHT) as client:

            async def one(worker: int) -> None:
                outcome = await client.submit({"VideoId": f"video-{worker:06d}", "Count": "1"})
                assert outcome.kind == ACCEPTED, outcome

            return await _in_flight(one, n)

    return anyio.run(main)


def child(variant: str, url: str, n: int) -> None:
    if variant == VARIANTS[0]:
        cpu = _sdk(url, n)
    elif variant == VARIANTS[1]:
        cpu = _httpx(url, n, "client")
    elif variant == VARIANTS[2]:
        cpu = _httpx(url, n, "transport")
    else:
        cpu = _snapbatch(url, n)
    print(json.dumps({"cpu_ms_per_call": cpu / n * 1000}))


def main() -> None:
    from _emulator import emulator, key_env
    from _measure import table

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp, emulator(Path(tmp), "--qps", "1000000") as served:
        for _ in range(rounds):
            for variant in VARIANTS:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", variant, served.url, str(n)],
                    env={**key_env(), "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[variant].append(json.loads(out.stdout.splitlines()[-1])["cpu_ms_per_call"])
    sdk = statistics.median(results[VARIANTS[0]])
    rows = [
        [
            name,
            f"{statistics.median(runs):.3f}",
            f"{min(runs):.3f}-{max(runs):.3f}",
            f"{statistics.median(runs) / sdk:.2f}",
        ]
        for name, runs in results.items()
    ]
    print(f"{n} calls each after {WARM_UP} to warm up, {IN_FLIGHT} in flight; median of {rounds} interleaved rounds")
    print(table(["layer", "CPU ms a call", "range", "ratio to SDK"], rows))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
