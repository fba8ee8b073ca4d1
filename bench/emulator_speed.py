"""How many calls a second the emulator can answer: drive a `snapbatch emulator` process with the snapbatch
client (16 in flight, limit lifted) and divide calls by the emulator's own CPU seconds.

    python bench/emulator_speed.py [CALLS]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _measure import table

from snapbatch.cli.main import EMULATOR_KEY_ID, EMULATOR_KEY_SECRET
from snapbatch.emulator import emulator_process
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials


def _cpu_s(pid: int) -> float:
    """The CPU seconds (user and system) process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(url: str, calls: int) -> float:
    async with VodClient(url, Credentials(EMULATOR_KEY_ID, EMULATOR_KEY_SECRET), max_connections=16) as client:
        gate = anyio.Semaphore(16)

        async def one() -> None:
            async with gate:
                outcome = await client.submit({"VideoId": "v", "Count": "1"})
                assert outcome.kind == "accepted", outcome

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(one)
        return time.perf_counter() - start


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with emulator_process(None, "--qps", "1000000") as served:
        idle_cpu = _cpu_s(served.process.pid)
        wall = anyio.run(_drive, served.url, calls)
        cpu = _cpu_s(served.process.pid) - idle_cpu

    print(
        table(
            [
                "calls",
                "wall s",
                "end-to-end calls/s",
                "emulator CPU s",
                "emulator CPU ms/call",
                "emulator capacity calls/s (one core)",
            ],
            [
                [
                    str(calls),
                    f"{wall:.2f}",
                    f"{calls / wall:.0f}",
                    f"{cpu:.2f}",
                    f"{cpu / calls * 1000:.3f}",
                    f"{calls / cpu:.0f}",
                ]
            ],
        )
    )


if __name__ == "__main__":
    main()
