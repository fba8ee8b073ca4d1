"""From submitted to done at scale: every video's final state known from callbacks plus polling.

    python bench/completion.py [VIDEOS]        # default 10,000

For each scenario, a `snapbatch emulator` process (jobs complete after 3 s; a share fail asynchronously;
10% of SnapshotComplete events are lost for good, 5% delivered twice; callbacks signed) and a
`snapbatch receive` process behind it; then `snapbatch run` (at --qps 1000: the emulator allows it),
a wait until the callbacks stop arriving, `snapbatch poll --until-done` for what the callbacks missed, and
`snapbatch report` to count what is known. Exit codes must tell success (0) from failure (1).
"""

from __future__ import annotations

import collections
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _emulator import key_env
from _measure import table

KEY = "BenchAuthKey2026"
POLL_ARGS = ("--timeout", "600", "--every", "2", "--json")


def start(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def events_in(store: Path) -> int:
    try:
        with sqlite3.connect(store) as db:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.Error:
        return 0


def scenario(videos: int, fail_rate: float) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "ids.txt").write_text("".join(f"{i:032x}\n" for i in range(videos)))
        manifest = work / "m.yaml"
        manifest.write_text(
            "version: 1\nbatch: scale\nqps: 30\njobs:\n  - {name: all, videos: {file: ids.txt}, params: {Count: 5}}\n"
        )
        store = work / ".snapbatch" / "events.sqlite3"
        env = {**key_env(), "SNAPBATCH_CALLBACK_AUTH_KEY": KEY}
        snapbatch = [sys.executable, "-m", "snapbatch"]
        # the events' signature covers the URL the emulator posts to: the receiver needs it before it starts
        port = free_port()
        public = f"http://127.0.0.1:{port}/vod"
        receive = ["receive", "--port", str(port), "--events", str(store), "--public-url", public]
        receiver, _ = start([*snapbatch, *receive], env)
        faults = ["--job-fail", str(fail_rate), "--callback-drop", "0.10", "--callback-duplicate", "0.05"]
        callbacks = ["--callback-url", public, "--callback-auth-key", KEY, "--seed", "2026"]
        emulator, url = start(
            [*snapbatch, "emulator", "--qps", "100000", "--job-seconds", "3", *faults, *callbacks], env
        )
        try:
            started = time.perf_counter()
            run = subprocess.run(
                [*snapbatch, "run", str(manifest), "--endpoint", url, "--qps", "1000"], env=env, capture_output=True
            )
            ran = time.perf_counter() - started
            # callbacks: wait until the event count stops growing (3 s of job time, then delivery)
            seen, quiet = -1, 0
            while quiet < 3:
                time.sleep(1)
                now = events_in(store)
                quiet = quiet + 1 if now == seen else 0
                seen = now
            poll_started = time.perf_counter()
            poll = subprocess.run(
                [*snapbatch, "poll", str(manifest), "--endpoint", url, "--qps", "500", "--until-done", *POLL_ARGS],
                env=env,
                capture_output=True,
                text=True,
            )
            polled = time.perf_counter() - poll_started
            report = subprocess.run(
                [*snapbatch, "report", str(manifest), "--format", "jsonl"], env=env, capture_output=True, text=True
            )
        finally:
            stop(emulator)
            stop(receiver)
        rows = [json.loads(line) for line in report.stdout.splitlines()]
        known = collections.Counter(row["completion"] for row in rows)
        asked = json.loads(poll.stdout)["poll"]["asked"] if poll.stdout else "?"
        final = known["completed"] + known["failed"]
        return [
            f"{fail_rate:.0%}",
            f"{videos:,}",
            f"{run.returncode}",
            f"{ran:.1f}",
            f"{seen:,}",
            f"{asked:,}" if isinstance(asked, int) else asked,
            f"{polled:.1f}",
            f"{known['completed']:,}",
            f"{known['failed']:,}",
            f"{videos - final:,}",
            f"{poll.returncode}",
        ]


def main() -> None:
    videos = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    rows = [scenario(videos, 0.05), scenario(videos, 0.0)]
    print("10% of events lost, 5% delivered twice; poll asks GetJobDetail about the rest")
    print(
        table(
            [
                "jobs failing",
                "videos",
                "run exit",
                "run s",
                "events recorded",
                "polled",
                "poll s",
                "completed",
                "failed",
                "not known",
                "poll exit",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
