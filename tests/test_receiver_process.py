"""`snapbatch receive` as a process: signed events are acknowledged only once on disk, so none that got its
200 is lost when the process is killed (SIGKILL) in the middle of a stream of events."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from snapbatch.completion.receiver import callback_signature

KEY = "ProcessTestKey42"
PUBLIC_URL = "https://hooks.example.test/vod/events"  # what VOD signs; the proxy in front rewrites it


def _event(n: int) -> bytes:
    return json.dumps(
        {
            "EventType": "SnapshotComplete",
            "EventTime": "2026-11-27T01:00:00Z",
            "VideoId": f"v{n}",
            "Status": "success",
            "Extend": json.dumps({"snapbatch": f"{n:024x}"}),
            "SnapshotInfos": [{"JobId": f"job-{n}", "SnapshotType": "NormalSnapshot", "SnapshotCount": 3}],
        }
    ).encode()


def test_kill_9_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """Eight senders post events to a receiver process; once 300 are acknowledged it is killed with
    SIGKILL: the event store opens intact and holds every acknowledged event (and nothing twice)."""
    store = tmp_path / "events.sqlite3"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snapbatch",
            "receive",
            "--port",
            "0",
            "--events",
            str(store),
            "--public-url",
            PUBLIC_URL,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "SNAPBATCH_CALLBACK_AUTH_KEY": KEY},
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().split()[-1] + "/vod/events"
    acked: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()

    def send(first: int) -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:
            for n in range(first, first + 10_000):
                stamp = str(int(time.time()))
                headers = {"x-vod-timestamp": stamp, "x-vod-signature": callback_signature(PUBLIC_URL, stamp, KEY)}
                try:
                    status = client.post(url, content=_event(n), headers=headers).status_code
                except httpx.HTTPError:
                    return
                assert status == 200
                with lock:
                    acked.append(n)
                    if len(acked) >= 300:
                        enough.set()

    senders = [threading.Thread(target=send, args=(i * 10_000,)) for i in range(8)]
    for t in senders:
        t.start()
    try:
        assert enough.wait(timeout=120)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        for t in senders:
            t.join()
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = [row[0] for row in db.execute("SELECT job_id FROM events")]
    assert len(stored) == len(set(stored))
    missing = {f"job-{n}" for n in acked} - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost"


def test_receive_refuses_a_key_without_the_public_url(tmp_path: Path) -> None:
    """An auth key without --public-url cannot be checked: usage error (exit 2) naming the option."""
    result = subprocess.run(
        [sys.executable, "-m", "snapbatch", "receive", "--port", "0", "--events", str(tmp_path / "e.sqlite3")],
        capture_output=True,
        text=True,
        env={**os.environ, "SNAPBATCH_CALLBACK_AUTH_KEY": KEY},
        timeout=60,
    )
    assert result.returncode == 2 and "--public-url" in result.stderr
