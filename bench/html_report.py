"""`report --html` on a 1,000,000-request batch: what the attempt tallies cost in the state file, and how long
the page takes to make, its size and the command's peak RSS.

The state is filled through the real State API, as a run writes it: ingest, then one apply() a simulated
second (intents and settled outcomes of that second's calls, 30 calls/s, so 33,334 seconds: 9 h 16 min)
with an injected clock, then record_completions() for the jobs. A seeded mix: 3% of calls throttled first
(resent the same second), 0.5% 5xx first, 1% of requests refused (InvalidVideo.NotFound), 0.1% left in
doubt; 3% of jobs fail after submission. The tallies' share of the file is measured by copying it, dropping
table attempt_seconds and vacuuming both copies.

python bench/html_report.py [REQUESTS [KEEP.html]]   # default 1,000,000; KEEP.html: a copy of the page
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure, table

from snapbatch.models import ACCEPTED, FAILED, IN_DOUBT, THROTTLED, TRANSIENT, Outcome, Request
from snapbatch.run.state import Change, Completion, Intent, Settled, State

QPS = 30
JOBS = ("homepage", "catalog", "partner-feed")
START = 1_795_737_600.0  # 2026-11-27 00:00 UTC


def fill(path: Path, n: int) -> None:
    now = [START]
    state = State(path, clock=lambda: now[0])
    try:
        requests = (
            Request(f"{i:024x}", JOBS[min(2, i * 3 // n)], None, "VideoId", f"{i:032x}", {"VideoId": f"{i:032x}"})
            for i in range(n)
        )
        state.ingest(requests, "bench", "bench")
        rng = random.Random(15)
        jobs: list[str] = []
        for second in range(0, n, QPS):
            now[0] = START + second / QPS
            changes: list[Change] = []
            for i in range(second, min(n, second + QPS)):
                key = f"{i:024x}"
                changes.append(Intent(key))
                roll = rng.random()
                if roll < 0.03:
                    changes += [
                        Settled(key, Outcome(THROTTLED, code="Throttling.User", message="throttled")),
                        Intent(key),
                    ]
                elif roll < 0.035:
                    changes += [Settled(key, Outcome(TRANSIENT, code="InternalError", message="5xx")), Intent(key)]
                final = rng.random()
                if final < 0.01:
                    changes.append(
                        Settled(key, Outcome(FAILED, code="InvalidVideo.NotFound", message="The video does not exist."))
                    )
                elif final < 0.011:
                    changes.append(Settled(key, Outcome(IN_DOUBT, message="no answer")))
                else:
                    changes.append(Settled(key, Outcome(ACCEPTED, job_id=f"job{i:026x}")))
                    jobs.append(f"job{i:026x}")
            state.apply(changes)
        now[0] += 120
        for start in range(0, len(jobs), 5000):
            state.record_completions(
                [
                    Completion(j, "fail", at=now[0], code="ReadSourceFailed", message="source missing")
                    if rng.random() < 0.03
                    else Completion(j, "success", at=now[0])
                    for j in jobs[start : start + 5000]
                ]
            )
    finally:
        state.close()


def vacuumed_size(path: Path, drop: bool) -> int:
    copy = path.with_suffix(".copy")
    shutil.copy(path, copy)
    with sqlite3.connect(copy) as db:
        if drop:
            db.execute("DROP TABLE attempt_seconds")
    db = sqlite3.connect(copy)
    db.execute("VACUUM")
    db.close()
    size = copy.stat().st_size
    copy.unlink()
    return size


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sqlite3"
        started = time.perf_counter()
        fill(path, n)
        print(f"filled {n:,} requests in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            tallies = db.execute("SELECT COUNT(*), SUM(calls) FROM attempt_seconds").fetchone()
        whole, without = vacuumed_size(path, False), vacuumed_size(path, True)
        manifest = Path(tmp) / "m.yaml"
        manifest.write_text("version: 1\nbatch: bench\njobs:\n  - {name: homepage, videos: [v1], params: {Count: 1}}\n")
        html = Path(tmp) / "report.html"
        m = measure(
            [sys.executable, "-m", "snapbatch", "report", str(manifest), "--state", str(path), "--html", str(html)]
        )
        if len(sys.argv) > 2:
            shutil.copy(html, sys.argv[2])
        rows = [
            [
                f"{n:,}",
                f"{tallies[0]:,}",
                f"{tallies[1]:,}",
                f"{whole / 1e6:.1f}",
                f"{(whole - without) / 1e3:.0f}",
                f"{m.wall_s:.2f}",
                f"{m.cpu_s:.2f}",
                f"{m.peak_rss_mb:.0f}",
                f"{html.stat().st_size / 1e3:.0f}",
            ]
        ]
    print(
        table(
            [
                "requests",
                "tally rows",
                "attempts",
                "state MB",
                "tallies kB",
                "html wall s",
                "html cpu s",
                "peak RSS MiB",
                "html kB",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
