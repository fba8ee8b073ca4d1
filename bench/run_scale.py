"""`run` at scale: a 1,000,000-request batch against a `snapbatch emulator` process.

    python bench/run_scale.py

1. fresh state: seconds until the first call reaches the emulator, and peak RSS (stopped after 2,000 calls);
2. resume: a state holding all 1M requests with 999,000 submitted; seconds to the first call, seconds to
   finish the last 1,000 (at qps 1000), peak RSS.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import table
from plan_scale import write_ids

from snapbatch.cli.main import EMULATOR_KEY_ID, EMULATOR_KEY_SECRET
from snapbatch.emulator import emulator_process
from snapbatch.manifest.expand import expand, fingerprint
from snapbatch.manifest.load import load_manifest
from snapbatch.run.state import State

N = 1_000_000


def timed_run(manifest: Path, url: str, log: Path, *extra: str) -> tuple[float, float, float, dict[str, object]]:
    env = {
        **os.environ,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": EMULATOR_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": EMULATOR_KEY_SECRET,
    }
    lines_before = len(log.read_text().splitlines()) if log.exists() else 0
    start = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapbatch", "run", str(manifest), "--endpoint", url, "--qps", "1000", "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) not in (0, 5):
        raise SystemExit(err.decode())
    first = json.loads(log.read_text().splitlines()[lines_before])["t"]
    return first - start, wall, usage.ru_maxrss / 1024, json.loads(out)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        log = root / "calls.jsonl"
        with emulator_process(log, "--qps", "1000000") as served:
            url = served.url
            for n in (200_000, N):
                write_ids(root / f"ids-{n}.txt", n)
                manifest = root / f"m-{n}.yaml"
                manifest.write_text(
                    f"version: 1\nbatch: scale{n}\njobs:\n  - {{name: all, videos: {{file: ids-{n}.txt}}, "
                    "params: {Count: 1}}\n"
                )
                first, wall, rss, _ = timed_run(manifest, url, log, "--max-requests", "2000")
                rows.append(
                    [
                        f"fresh state, {n:,} requests (stopped after 2,000 calls)",
                        f"{first:.1f}",
                        f"{wall:.1f}",
                        f"{rss:.0f}",
                    ]
                )
            state_path = root / "resume.sqlite3"
            loaded = load_manifest(manifest, {})
            state = State(state_path)
            state.ingest(expand(loaded, fold_duplicates=False), fingerprint(loaded), loaded.batch)
            state.close()
            with sqlite3.connect(state_path) as db:
                db.execute("UPDATE requests SET status = 'submitted', submitted_at = 1 WHERE seq <= ?", (N - 1000,))
            first, wall, rss, summary = timed_run(manifest, url, log, "--state", str(state_path))
            assert summary["submitted"] == 1000 and summary["skipped"] == N - 1000, summary
            rows.append(
                ["resume, 999,000 of 1M done (finishes the last 1,000)", f"{first:.1f}", f"{wall:.1f}", f"{rss:.0f}"]
            )
    print(table(["case", "s to first call", "wall s", "peak RSS MiB"], rows))


if __name__ == "__main__":
    main()
