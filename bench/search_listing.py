"""Listing a search job of N videos (default 1,000,000) through SearchMedia into the state, with `snapbatch run`.

An emulator process serves a generated catalogue; `snapbatch run --max-requests 1` lists the search job
(PageSize 100, ScrollToken), freezes the list into the state, starts ingesting its requests and stops
after sending one (the ingest of the rest is abandoned and redone by the next run: not measured here). Two rows:
at SearchMedia's documented 50 calls/s (N/100/50 s of pages: 200 s for a million), and with the limit
lifted (emulator and client at 2,000/s) to show what the client itself costs. Peak RSS is the run
process's. The machine may be shared: say so next to any figure taken from here.

    python bench/search_listing.py [N]
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _emulator import emulator, key_env
from _measure import Measured, table

T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())


def catalogue(path: Path, n: int) -> None:
    with path.open("w") as out:
        for i in range(n):
            created = datetime.fromtimestamp(T0 + i * 7, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            row = {"VideoId": f"{i:032x}", "CateId": 1234, "CreationTime": created, "Status": "Normal", "Title": ""}
            out.write(json.dumps(row) + "\n")


def measure(argv: list[str], env: dict[str, str]) -> Measured:
    """Like _measure.measure, but exit 5 (stopped by --max-requests, work left) is the expected end."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 5:
        assert proc.stderr is not None
        raise SystemExit(f"{argv} failed ({code}): {proc.stderr.read().decode()[-2000:]}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        catalogue(work / "catalogue.jsonl", n)
        modes = (("50/s (documented limit)", "50", "50"), ("limit lifted", "100000", "2000"))
        for label, server_qps, client_qps in modes:
            run_dir = work / label.split()[0].replace("/", "")
            run_dir.mkdir()
            manifest = run_dir / "m.yaml"
            manifest.write_text(
                'version: 1\nbatch: bench\njobs:\n  - name: all\n    videos: {search: "CateId = 1234 and '
                "Status = 'Normal'\"}\n    params: {Count: 1}\n"
            )
            with emulator(work, "--catalogue", str(work / "catalogue.jsonl"), "--search-qps", server_qps) as served:
                m = measure(
                    [
                        sys.executable, "-m", "snapbatch", "run", str(manifest), "--endpoint", served.url,
                        "--max-requests", "1", "--search-qps", client_qps, "--progress-every", "30",
                    ],
                    env=key_env(),
                )  # fmt: skip
            db = sqlite3.connect(run_dir / ".snapbatch" / "bench.sqlite3")
            listed, started, finished, pages = db.execute(
                "SELECT listed, started_at, finished_at, pages FROM listings"
            ).fetchone()
            db.close()
            listing_s = finished - started
            rows.append(
                [
                    label,
                    f"{listed:,}",
                    f"{pages:,}",
                    f"{listing_s:.0f} s",
                    f"{pages / listing_s:.1f}",
                    f"{m.wall_s:.0f} s",
                    f"{m.cpu_s:.0f} s",
                    f"{m.peak_rss_mb:.0f} MB",
                ]
            )
    print(
        table(
            [
                "SearchMedia rate", "videos listed", "pages", "listing", "pages/s",
                "run wall", "run CPU", "run peak RSS",
            ],
            rows,
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
