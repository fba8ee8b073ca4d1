"""The emulator for tests, with the tests' AccessKey: on loopback in a thread of this process, or in a
process of its own. Both helpers start it in
query-only mode unless told otherwise: parameters count only from the query string, as on a gateway that
ignores form bodies, so a client that put them anywhere else would fail here."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from snapbatch.emulator import Emulator, EmulatorConfig, EmulatorProcess, RunningEmulator, emulator_process
from snapbatch.emulator import running_emulator as _running_emulator
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.providers import RenewingCredentials

AK_ID, AK_SECRET = "LTAI5tEmulatorTestKey", "emulator-test-secret-DO-NOT-LEAK-7f3a"


@contextmanager
def running(
    config: EmulatorConfig | None = None, *, wall: Callable[[], float] = time.time, query_only: bool = True
) -> Iterator[RunningEmulator]:
    """The emulator serving on a free loopback port; ``wall`` is its clock for timestamps and job times."""
    config = config or EmulatorConfig()
    config.query_only = query_only
    if not config.credentials:
        config.credentials = {AK_ID: (AK_SECRET, None)}
    with _running_emulator(Emulator(config, wall=wall)) as served:
        yield served


@contextmanager
def process(tmp: Path, *args: str, query_only: bool = True) -> Iterator[EmulatorProcess]:
    """`snapbatch emulator` in a process of its own, as a real service would be: nothing it does shares a
    GIL or an event loop with the client, so arrival times at it are what a server would see."""
    with emulator_process(
        tmp / "emulator-calls.jsonl",
        "--access-key-id",
        AK_ID,
        "--access-key-secret",
        AK_SECRET,
        *(["--query-only"] if query_only else []),
        *args,
    ) as served:
        yield served


def raw_exchange(port: int, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``data`` as it is on a fresh loopback connection to ``port``, close the sending side, and return
    every byte the server answers until it closes: how a test speaks malformed or pipelined HTTP."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def renewing_at_two_thirds() -> tuple[RenewingCredentials, list[str]]:
    """STS-like credentials (keys STS.1, STS.2, ...; secret-KEY, token-KEY) with a 30 s life, primed, on a clock
    that stands two thirds into that life (past the renewal point, far from expiry) and never moves, so a
    background renewal happens exactly once and no call ever finds them expired. Also the list of keys fetched."""
    clock = [1000.0]
    fetches: list[str] = []

    def fetch() -> tuple[Credentials, float]:
        key = f"STS.{len(fetches) + 1}"
        fetches.append(key)
        return Credentials(key, f"secret-{key}", f"token-{key}", "test source"), 1000.0 + 30.0

    provider = RenewingCredentials(fetch, "test source", wall=lambda: clock[0])
    provider.prime()
    clock[0] = 1000.0 + 21.0
    return provider, fetches
