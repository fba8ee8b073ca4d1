"""A real emulator on loopback, in its own thread and event loop, for tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from anyio.from_thread import start_blocking_portal

from snapbatch.emulator import Emulator, EmulatorConfig

AK_ID, AK_SECRET = "LTAI5tEmulatorTestKey", "emulator-test-secret-DO-NOT-LEAK-7f3a"


@dataclass
class Running:
    emulator: Emulator
    url: str
    port: int


@contextmanager
def running(config: EmulatorConfig | None = None) -> Iterator[Running]:
    config = config or EmulatorConfig()
    if not config.credentials:
        config.credentials = {AK_ID: (AK_SECRET, None)}
    emulator = Emulator(config)
    with start_blocking_portal() as portal:
        future, port = portal.start_task(emulator.serve)
        try:
            yield Running(emulator, f"http://127.0.0.1:{port}", port)
        finally:
            future.cancel()
