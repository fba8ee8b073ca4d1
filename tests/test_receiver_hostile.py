"""The receiver facing hostile or broken clients: every bad request gets a 4xx (never a crash, never a hang
until the idle timeout), and the receiver still records the next good event."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal

from snapbatch.completion.events import EventStore
from snapbatch.completion.receiver import MAX_BODY_BYTES, Receiver, ReceiverConfig, callback_signature

KEY = "HostileTestKey01"
URL = "https://hooks.example.test/vod/events"


def _signed() -> dict[str, str]:
    stamp = str(int(time.time()))
    return {"X-VOD-TIMESTAMP": stamp, "X-VOD-SIGNATURE": callback_signature(URL, stamp, KEY)}


def _request(body: bytes, headers: dict[str, str] | None = None, *, length: int | None = None) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode("latin-1")
    size = len(body) if length is None else length
    return b"POST /vod/events HTTP/1.1\r\nHost: x\r\n" + head + b"Content-Length: %d\r\n\r\n" % size + body


def _exchange(port: int, raw: bytes) -> bytes:
    """Send one request and read the status line (b'' when the receiver closed without answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(raw)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n")[0]


def _event(job: object = "J1", **fields: object) -> bytes:
    return json.dumps(
        {"EventType": "SnapshotComplete", "Status": "success", "SnapshotInfos": [{"JobId": job}], **fields}
    ).encode()


@contextmanager
def _receiver(tmp_path: Path) -> Iterator[tuple[int, EventStore, list[str]]]:
    store = EventStore(tmp_path / "events.sqlite3")
    log: list[str] = []
    receiver = Receiver(store, ReceiverConfig(public_url=URL, auth_keys=(KEY,)), log=log.append)
    try:
        with start_blocking_portal() as portal:
            future, port = portal.start_task(receiver.serve)
            try:
                yield port, store, log
            finally:
                future.cancel()
    finally:
        store.close()


HOSTILE: dict[str, tuple[Callable[[], bytes], int]] = {
    # before the signature is checked: anyone who can reach the port can send these
    "timestamp of 400 digits": (
        lambda: _request(b"{}", {"X-VOD-TIMESTAMP": "9" * 400, "X-VOD-SIGNATURE": "0" * 32}),
        403,
    ),
    "timestamp with non-ASCII digits": (
        lambda: _request(b"{}", {"X-VOD-TIMESTAMP": "\xb2" * 10, "X-VOD-SIGNATURE": "0" * 32}),
        403,
    ),
    "signature not ASCII": (
        lambda: _request(b"{}", {**_signed(), "X-VOD-SIGNATURE": "\xff" * 32}),
        403,
    ),
    # signed (the signature does not cover the body: a captured one can be replayed for 5 minutes)
    "JSON nested 100,000 deep": (lambda: _request(b"[" * 100_000, _signed()), 400),
    "SnapshotInfos a number": (
        lambda: _request(json.dumps({"EventType": "SnapshotComplete", "SnapshotInfos": 5}).encode(), _signed()),
        400,
    ),
    "SnapshotInfos a string": (
        lambda: _request(json.dumps({"EventType": "SnapshotComplete", "SnapshotInfos": "abc"}).encode(), _signed()),
        400,
    ),
    "JobId a lone surrogate": (lambda: _request(_event("\ud800"), _signed()), 400),
    "VideoId a lone surrogate": (lambda: _request(_event(VideoId="\ud800"), _signed()), 400),
    "ErrorMessage a lone surrogate": (lambda: _request(_event(ErrorMessage="x\udfff"), _signed()), 400),
    "JobId an object": (lambda: _request(_event({"a": 1}), _signed()), 400),
    "body of 10 GB announced": (lambda: _request(b"{", _signed(), length=10 * 1024**3), 413),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_request_gets_a_4xx_and_the_receiver_goes_on(tmp_path: Path, case: str) -> None:
    """A hostile or broken callback is answered with its 4xx (a too large body without reading it), nothing
    is recorded, and the receiver records the next good event."""
    build, status = HOSTILE[case]
    with _receiver(tmp_path) as (port, store, log):
        assert _exchange(port, build()).startswith(b"HTTP/1.1 %d " % status)
        assert store.count() == 0
        assert _exchange(port, _request(_event("GOOD"), _signed())) == b"HTTP/1.1 200 OK"
        assert store.count() == 1
    assert all(KEY not in line for line in log)


def test_an_extend_that_is_not_json_is_still_recorded_by_job_id(tmp_path: Path) -> None:
    """Extend is the user's own text: an unparsable one (here nested 5,000 deep) carries no request key, and
    the event is recorded by its JobId."""
    with _receiver(tmp_path) as (port, store, _):
        assert _exchange(port, _request(_event("J9", Extend="[" * 5000), _signed())) == b"HTTP/1.1 200 OK"
        assert [c.job_id for c in store.for_jobs(["J9"])] == ["J9"] and store.for_jobs(["J9"])[0].key is None


def test_a_body_over_the_limit_sent_in_chunks_gets_413(tmp_path: Path) -> None:
    """A chunked body growing past the limit is answered 413 as soon as it does, not read to its end."""
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    head = b"POST /vod/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in _signed().items()).encode() + b"\r\n"
    with _receiver(tmp_path) as (port, _, _):
        # never terminated: only an answer given once the limit is passed ends this exchange
        assert _exchange(port, head + chunk * (MAX_BODY_BYTES // 65536 + 2)).startswith(b"HTTP/1.1 413 ")


def test_more_connections_than_file_descriptors_do_not_kill_the_receiver(tmp_path: Path) -> None:
    """A receiver process limited to 256 open files, faced with 300 connections at once, answers those over
    its connection cap with 503 (or drops them) instead of dying on EMFILE, and serves the next client."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapbatch", "receive", "--port", "0", "--events", str(tmp_path / "e.sqlite3")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "SNAPBATCH_CALLBACK_AUTH_KEY"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)),
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline().rsplit(":", 1)[1])
    health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(300)]
    answers: list[bytes] = []
    try:
        for sock in socks:
            with contextlib.suppress(OSError):  # already answered 503 and closed
                sock.sendall(health)
        for sock in socks:  # all held open until each is answered: the receiver must accept every one
            try:
                answers.append(sock.recv(64)[:12])
            except OSError:
                answers.append(b"reset")
        for sock in socks:
            sock.close()
        assert answers.count(b"HTTP/1.1 200") >= 150
        assert set(answers) <= {b"HTTP/1.1 200", b"HTTP/1.1 503", b"", b"reset"}
        # The receiver frees the 300 slots as it reads their closes, which another process cannot be told of:
        # ask until it serves again (503 meanwhile is its cap working), bounded so a dead receiver fails.
        deadline, answer = time.monotonic() + 60, b""
        while answer != b"HTTP/1.1 200 OK" and time.monotonic() < deadline and proc.poll() is None:
            answer = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            if answer != b"HTTP/1.1 200 OK":
                assert answer.startswith(b"HTTP/1.1 503") or answer == b"", answer
                time.sleep(0.05)
        assert answer == b"HTTP/1.1 200 OK"
        assert proc.poll() is None
    finally:
        for sock in socks:
            sock.close()
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err


def test_an_unauthenticated_receiver_behind_a_proxy_warns_once(tmp_path: Path) -> None:
    """Without an auth key, the first callback forwarded by a proxy (X-Forwarded-For) logs a warning that
    the receiver is reachable by anyone, once; the events are still recorded."""
    store = EventStore(tmp_path / "events.sqlite3")
    log: list[str] = []
    receiver = Receiver(store, ReceiverConfig(), log=log.append)
    try:
        with start_blocking_portal() as portal:
            future, port = portal.start_task(receiver.serve)
            try:
                assert _exchange(port, _request(_event("J1"))) == b"HTTP/1.1 200 OK"
                assert not log
                for job in ("J2", "J3"):
                    forwarded = {"X-Forwarded-For": "203.0.113.9"}
                    assert _exchange(port, _request(_event(job), forwarded)) == b"HTTP/1.1 200 OK"
            finally:
                future.cancel()
        assert store.count() == 3
    finally:
        store.close()
    assert len(log) == 1 and "no auth key" in log[0] and "203.0.113.9" in log[0]
