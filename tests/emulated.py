"""A real emulator on loopback, in its own thread and event loop, for tests. Both helpers start it in
query-only mode unless told otherwise: parameters count only from the query string, as on a gateway that
ignores form bodies, so a client that put them anywhere else would fail here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from anyio.from_thread import start_blocking_portal

from snapbatch.emulator import Emulator, EmulatorConfig

AK_ID, AK_SECRET = "LTAI5tEmulatorTestKey", "emulator-test-secret-DO-NOT-LEAK-7f3a"


@dataclass
class Running:
    emulator: Emulator
    url: str
    port: int


@contextmanager
def running(
    config: EmulatorConfig | None = None, *, wall: Callable[[], float] = time.time, query_only: bool = True
) -> Iterator[Running]:
    """The emulator serving on a free loopback port; ``wall`` is its clock for timestamps and job times."""
    config = config or EmulatorConfig()
    config.query_only = query_only
    if not config.credentials:
        config.credentials = {AK_ID: (AK_SECRET, None)}
    emulator = Emulator(config, wall=wall)
    with start_blocking_portal() as portal:
        future, port = portal.start_task(emulator.serve)
        try:
            yield Running(emulator, f"http://127.0.0.1:{port}", port)
        finally:
            future.cancel()


@dataclass
class Process:
    url: str
    log: Path

    def calls(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@contextmanager
def process(tmp: Path, *args: str, query_only: bool = True) -> Iterator[Process]:
    """`snapbatch emulator` in a process of its own, as a real service would be: nothing it does shares a
    GIL or an event loop with the client, so arrival times at it are what a server would see."""
    log = tmp / "emulator-calls.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snapbatch",
            "emulator",
            "--access-key-id",
            AK_ID,
            "--access-key-secret",
            AK_SECRET,
            "--log",
            str(log),
            *(["--query-only"] if query_only else []),
            *args,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        proc.stdout.readline()
        yield Process(url, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
