"""Running an emulator for a caller: in a thread of this process with its own event loop
(``running_emulator``: `run --emulator`, the tests), or as a `snapbatch emulator` process of its own
(``emulator_process``: where arrival times must be what a separate server would see, as in benchmarks)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from anyio.from_thread import start_blocking_portal

from snapbatch.emulator.server import serve
from snapbatch.emulator.service import Emulator

__all__ = ["EmulatorProcess", "RunningEmulator", "emulator_process", "running_emulator"]


@dataclass(frozen=True)
class RunningEmulator:
    emulator: Emulator
    url: str
    port: int


@contextmanager
def running_emulator(
    emulator: Emulator, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> Iterator[RunningEmulator]:
    """``emulator`` serving on a free port of ``host`` (HTTPS with ``ssl_context``) in a thread of its own,
    until the block ends."""
    scheme = "https" if ssl_context is not None else "http"
    with start_blocking_portal() as portal:
        future, port = portal.start_task(partial(serve, emulator, host, 0, ssl_context=ssl_context))
        try:
            yield RunningEmulator(emulator, f"{scheme}://{host}:{port}", port)
        finally:
            future.cancel()


@dataclass(frozen=True)
class EmulatorProcess:
    process: subprocess.Popen[str]
    url: str
    log: Path | None

    def calls(self) -> list[dict[str, Any]]:
        """Every call the emulator logged so far, in order."""
        assert self.log is not None, "started without a log"
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]


@contextmanager
def emulator_process(log: Path | None, *args: str) -> Iterator[EmulatorProcess]:
    """`snapbatch emulator ARGS` (with ``--log LOG`` unless None) in a process of its own, as a real service
    would be: nothing it does shares a GIL or an event loop with the caller. Stopped (SIGTERM) at the end."""
    logging = ["--log", str(log)] if log is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapbatch", "emulator", *logging, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]  # "snapbatch emulator listening on URL"
        proc.stdout.readline()  # the credentials it accepts
        yield EmulatorProcess(proc, url, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
