"""A real redis-server on a free loopback port, for the shared-quota tests (never a fake)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """redis-server on ``port``, without persistence: a restart comes back empty, as after a crash."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start it on ``port`` (again after ``kill``: the same port, as a restarted server)."""
        self.proc = proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:  # ready when it says so: a blocking read, not a sleep
            if "Ready to accept connections" in line:
                break
        else:
            raise AssertionError("redis-server exited at start")
        proc.stdout.close()  # nothing more to read; it logs little, and only at shutdown

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: apt-get install -y redis-server (.ci/run does this)")
    server = RedisServer(workdir)
    for _ in range(3):  # the free port may be taken by another test worker before redis-server binds it
        try:
            server.start()
            break
        except AssertionError:
            server.port = _free_port()
            server.url = f"redis://127.0.0.1:{server.port}/0"
    else:
        server.start()  # a fourth failure is not a race: let it say so
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.terminate()
            server.proc.wait()
