"""N snapbatch runs on one AccessKey at once, sharing the quota (on this host, or through Redis) or not
(each believing it owns 30/s), against an emulator enforcing 30/s per key in any 1 s window.

    python bench/shared_runners.py [REQUESTS_PER_RUN] [MODES]

MODES is a comma-separated subset of off,local,redis (default: all three; redis needs redis-server on
PATH and the `redis` extra). For 2 and 3 runs each, prints: accepted calls per second of all runs together
while they overlap, throttled calls, the busiest 1 s window of calls reaching the server (accepted or not)
and of accepted calls, and each run's share of the accepted calls while they overlap.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _emulator import emulator, key_env
from _measure import table

from snapbatch.emulator import busiest_window


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=root,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


def _one(root: Path, runs: int, n: int, quota: str) -> list[str]:
    env = {**key_env(), "XDG_CACHE_HOME": str(root / f"cache-{runs}-{quota[:5]}")}
    manifests = []
    for r in range(runs):
        (root / f"ids-{r}.txt").write_text("".join(f"run{r}-{i:06d}\n" for i in range(n)))
        m = root / f"m{r}.yaml"
        job = f"{{name: all, videos: {{file: ids-{r}.txt}}, params: {{Count: 1}}}}"
        m.write_text(f"version: 1\nbatch: shared{r}\njobs:\n  - {job}\n")
        manifests.append(m)
    with emulator(root, "--qps", "30", "--latency-ms", "20", "80") as served:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "snapbatch", "run", str(m), "--endpoint", served.url, "--quota", quota],
                env=env,
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for m in manifests
        ]
        for p in procs:
            p.wait()
        shutil.rmtree(root / ".snapbatch", ignore_errors=True)
        calls = served.calls()
    return _row(calls, runs, "not shared" if quota == "off" else ("redis" if quota.startswith("redis") else "local"))


def _row(calls: list[dict[str, Any]], runs: int, mode: str) -> list[str]:
    def run_of(c: dict[str, Any]) -> int:
        return int(str(c["params"].get("VideoId", "run0"))[3:].split("-")[0])

    accepted = [c for c in calls if c.get("outcome") == "accepted"]
    per_run = [[float(c["mono"]) for c in accepted if run_of(c) == r] for r in range(runs)]
    start = max(min(t) for t in per_run)
    end = min(max(t) for t in per_run)
    overlap = [[t for t in ts if start <= t <= end] for ts in per_run]
    together = sum(len(ts) for ts in overlap)
    rate = together / (end - start) if end > start else 0.0
    throttled = sum(1 for c in calls if str(c.get("code", "")).startswith("Throttling"))
    shares = " / ".join(f"{len(ts) / together:.1%}" for ts in overlap) if together else "-"
    return [
        str(runs),
        mode,
        f"{rate:.2f}",
        f"{rate / 30:.1%}",
        str(throttled),
        str(busiest_window([float(c["mono"]) for c in calls])),
        str(busiest_window([float(c["mono"]) for c in accepted])),
        shares,
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    modes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["off", "local", "redis"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        redis = _redis(root) if "redis" in modes and shutil.which("redis-server") else None
        try:
            for runs in (2, 3):
                for mode in modes:
                    if mode == "redis" and redis is None:
                        continue
                    quota = redis[1] if mode == "redis" and redis else mode
                    rows.append(_one(root, runs, n, quota))
        finally:
            if redis is not None:
                redis[0].terminate()
                redis[0].wait()
    print(
        table(
            [
                "runs",
                "quota",
                "accepted/s together (overlap)",
                "of 30/s",
                "throttled",
                "busiest 1 s (all calls)",
                "busiest 1 s (accepted)",
                "each run's share (overlap)",
            ],
            rows,
        )
    )
    print(f"\n{n} requests per run; os.cpu_count() = {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
