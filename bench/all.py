"""Every benchmark, one after the other, each printing its table (about 8 minutes on 2 cores, plus about
10 for the completion and receiver ones).

python bench/all.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [
    ("quota use at qps 30 against the usual alternatives", ["quota.py", "600"]),
    ("sharing the quota with another client on the same key", ["shared_quota.py", "600"]),
    ("client CPU per call against the official SDK", ["client_cost.py", "5000"]),
    ("plan at 200k and 1M videos", ["plan_scale.py"]),
    ("run start-up and resume at scale", ["run_scale.py"]),
    ("kill -9 and 30% faults soak", ["soak.py", "12", "1500"]),
    ("emulator speed", ["emulator_speed.py", "5000"]),
    ("2 minutes with credentials expiring every 20 s, beside a fixed key", ["credentials_refresh.py", "120"]),
    ("completion: 10,000 videos, failing jobs and lost callbacks", ["completion.py", "10000"]),
    ("callback receiver: events/s and memory over 1,000,000 events", ["receiver.py", "1000000"]),
]


def main() -> None:
    failed = []
    for title, args in SCRIPTS:
        print(f"\n## {title} (python bench/{' '.join(args)})\n", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], stderr=subprocess.DEVNULL)
        print(f"\n({time.perf_counter() - start:.0f} s)", flush=True)
        if done.returncode:
            failed.append(args[0])
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
