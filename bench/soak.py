"""Soak: many runs killed (SIGKILL) at random instants against an emulator failing 30% of calls, then one
run to the end. Checks from the emulator's own log that nothing was lost and that a video got a second job
only where an answer was lost (a call in flight at a kill, or a connection dropped after the job was made).

    python bench/soak.py [ROUNDS] [VIDEOS]
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _emulator import emulator, key_env, snapbatch_run
from _measure import table

FAULTS = [
    "--fail",
    "InternalError=0.08",
    "--fail",
    "ServiceUnavailable=0.05",
    "--fail",
    "Throttling.User=0.07",
    "--fail",
    "drop-before=0.04",
    "--fail",
    "drop-after=0.06",
]  # 30% in all


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    videos = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rnd = random.Random(2026)
    env = key_env()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "ids.txt").write_text("".join(f"video-{i:06d}\n" for i in range(videos)))
        manifest = root / "m.yaml"
        manifest.write_text(
            "version: 1\nbatch: soak\njobs:\n  - {name: all, videos: {file: ids.txt}, params: {Count: 1}}\n"
        )
        state = root / ".snapbatch" / "soak.sqlite3"
        in_flight = 0
        codes: list[int] = []  # of the runs to the end, in order
        with emulator(root, "--qps", "400", "--latency-ms", "5", "60", "--seed", "1", *FAULTS) as served:
            command = snapbatch_run(manifest, served.url, "--qps", "300")
            for _ in range(rounds):
                proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(rnd.uniform(0.3, 2.5))
                proc.kill()
                proc.wait()
                if state.exists():
                    with sqlite3.connect(state) as db:
                        in_flight += db.execute("SELECT COUNT(*) FROM requests WHERE status = 'sending'").fetchone()[0]
            for _ in range(10):  # finish; a run may stop on the outage breaker and need another
                code = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
                codes.append(code)
                if code == 0:
                    break
            calls = served.calls()
    jobs: dict[str, int] = {}
    lost_after = 0
    for call in calls:
        if call.get("job_id"):
            jobs[call["params"]["VideoId"]] = jobs.get(call["params"]["VideoId"], 0) + 1
        if call.get("outcome") == "drop-after":
            lost_after += 1
    duplicates = sum(n - 1 for n in jobs.values())
    ok = len(jobs) == videos and duplicates <= in_flight + lost_after
    print(
        table(
            [
                "rounds killed",
                "videos",
                "calls",
                "videos with a job",
                "second jobs",
                "in flight at kills",
                "answers dropped after a job",
                "exit codes of the runs to the end",
                "verdict",
            ],
            [
                [
                    str(rounds),
                    str(videos),
                    str(len(calls)),
                    str(len(jobs)),
                    str(duplicates),
                    str(in_flight),
                    str(lost_after),
                    ", ".join(map(str, codes)),
                    "ok" if ok else "FAILED",
                ]
            ],
        )
    )
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
