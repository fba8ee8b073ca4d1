"""Quota use at qps 30, measured at the emulator: snapbatch against the ways people do it without it.

    python bench/quota.py [REQUESTS]

For answers in 20-80 ms, in 0.8-1.5 s, and in 20-80 ms with 0-30 ms of jitter on the way to the server
(which bunches calls that left evenly): accepted calls (the baselines do not resend throttled calls,
so some are lost), accepted calls per second overall and sustained (from the second call), the busiest
1-second window and the throttled count, for `snapbatch run`, the official SDK in a 32-thread pool with
a sleep-based limit, and an asyncio script with aiolimiter. The floor is 30/s: the table says how close each gets.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _emulator import baseline, emulator, key_env, server_view
from _measure import table


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = root / "ids.txt"
        ids.write_text("".join(f"video-{i:06d}\n" for i in range(n)))
        manifest = root / "m.yaml"
        manifest.write_text(
            "version: 1\nbatch: quota\njobs:\n  - {name: all, videos: {file: ids.txt}, params: {Count: 1}}\n"
        )
        env = key_env()
        scenarios = (
            ("20-80 ms", ["--latency-ms", "20", "80"]),
            ("800-1500 ms", ["--latency-ms", "800", "1500"]),
            # calls reach the server after a random 0-30 ms more, as over a network: evenly sent calls bunch
            ("20-80 ms, path jitter 0-30 ms", ["--latency-ms", "20", "80", "--path-jitter-ms", "30"]),
        )
        for label, emulator_args in scenarios:
            tools = {
                "snapbatch run": lambda url, state: [
                    sys.executable,
                    "-m",
                    "snapbatch",
                    "run",
                    str(manifest),
                    "--endpoint",
                    url,
                    "--state",
                    state,
                ],
                "SDK + 32 threads + sleep limit": lambda url, state: baseline("sdk", url, 30, 32, ids),
                "asyncio + aiolimiter": lambda url, state: baseline("aiolimiter", url, 30, 64, ids),
            }
            for name, command in tools.items():
                with emulator(root, "--qps", "30", *emulator_args) as served:
                    state = str(root / f"state-{name[:4]}-{len(rows)}.sqlite3")
                    subprocess.run(
                        command(served.url, state),
                        env=env,
                        check=True,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    view = server_view(served.calls())
                rows.append(
                    [
                        label,
                        name,
                        f"{view['accepted']}/{n}",
                        f"{view['rate']:.2f}",
                        f"{view['sustained']:.2f}",
                        f"{view['sustained'] / 30:.1%}",
                        str(view["busiest"]),
                        str(view["throttled"]),
                    ]
                )
                print(f"  {rows[-1]}", file=sys.stderr)
    print(
        table(
            [
                "answers in",
                "tool",
                "accepted",
                "accepted/s overall",
                "sustained/s",
                "of 30/s",
                "busiest 1 s window",
                "throttled",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
