"""Sharing the account's quota: snapbatch runs while another client uses the same AccessKey at 10 calls/s
(the official SDK in a thread pool with a sleep-based limit, as a colleague's script would), against an
emulator enforcing 30/s per key.

    python bench/shared_quota.py [REQUESTS]

Prints snapbatch's accepted rate while the other client runs (the fair share is 20/s), both clients'
throttled calls, and the busiest second of accepted calls at the server. snapbatch resends its throttled
calls; the other client, like most scripts, loses them.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _emulator import baseline, emulator, key_env
from _measure import table

from snapbatch.emulator import busiest_window

NEIGHBOUR_QPS = 10


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "ids.txt").write_text("".join(f"video-{i:06d}\n" for i in range(n)))
        # the other client keeps going for about as long as snapbatch needs at its fair share
        (root / "theirs.txt").write_text("".join(f"other-{i:06d}\n" for i in range(n // 2)))
        manifest = root / "m.yaml"
        manifest.write_text(
            "version: 1\nbatch: shared\njobs:\n  - {name: all, videos: {file: ids.txt}, params: {Count: 1}}\n"
        )
        env = key_env()
        with emulator(root, "--qps", "30", "--latency-ms", "20", "80") as served:
            other = subprocess.Popen(
                baseline("sdk", served.url, NEIGHBOUR_QPS, 8, root / "theirs.txt"),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            subprocess.run(
                [sys.executable, "-m", "snapbatch", "run", str(manifest), "--endpoint", served.url],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            other.wait()
            calls = served.calls()
    mine = [c for c in calls if c["params"].get("VideoId", "").startswith("video-")]
    theirs = [c for c in calls if c["params"].get("VideoId", "").startswith("other-")]
    accepted = sorted(c["mono"] for c in mine if c.get("outcome") == "accepted")
    other_end = max(c["mono"] for c in theirs)
    while_shared = [t for t in accepted if t <= other_end]
    rate = (len(while_shared) - 1) / (while_shared[-1] - while_shared[0]) if len(while_shared) > 1 else 0.0

    def throttled(group: list[dict[str, object]]) -> int:
        return sum(1 for c in group if str(c.get("code", "")).startswith("Throttling"))

    row = [
        f"{NEIGHBOUR_QPS}/s",
        f"{len(accepted)}/{n}",
        f"{rate:.2f}",
        f"{rate / (30 - NEIGHBOUR_QPS):.1%}",
        str(throttled(mine)),
        f"{sum(1 for c in theirs if c.get('outcome') == 'accepted')}/{n // 2}",
        str(throttled(theirs)),
        str(busiest_window([float(c["mono"]) for c in calls if c.get("outcome") == "accepted"])),
    ]
    print(
        table(
            [
                "other client",
                "snapbatch accepted",
                "snapbatch /s while shared",
                "of its fair share",
                "snapbatch throttled (resent)",
                "other accepted",
                "other throttled (lost)",
                "busiest 1 s window (accepted)",
            ],
            [row],
        )
    )


if __name__ == "__main__":
    main()
