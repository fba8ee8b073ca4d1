"""Client cost with the rate limit lifted: CPU seconds per 1,000 calls and peak memory, snapbatch against the
official SDKs (aliyun-python-sdk-core, and the V3 alibabacloud-vod20170321) in 16-thread pools, against the
same emulator in the same run. snapbatch runs twice: as it runs by default (its calls paced through the host's
shared-quota file) and with --quota off.

    python bench/client_cost.py [CALLS] [ROUNDS] [snapbatch]

With ``snapbatch`` only the two snapbatch rows run (more rounds in the same time, to tell what the shared
quota itself costs from the noise), and the ratio column is to ``--quota off``.

Each tool runs twice a round, with 1 call and with CALLS calls; the difference divided by CALLS - 1 is
the marginal CPU a call, so interpreter start-up and imports are not counted. The tools alternate over
ROUNDS rounds (default 3) and the table gives the median and the range; the ratio is taken round by round
(each tool against the reference's run of the same round), then its median and range.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _emulator import baseline, emulator, key_env, snapbatch_lifted
from _measure import table


def cpu_of(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    import time

    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command} failed")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    env = key_env()
    tools: tuple[str, ...] = (
        "snapbatch run (16 in flight)",
        "snapbatch run --quota off",
        "official SDK, 16 threads",
        "official V3 SDK, 16 threads",
    )
    if len(sys.argv) > 3 and sys.argv[3] == "snapbatch":
        tools = tools[:2]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in tools}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for count in (1, n):
            (root / f"ids-{count}.txt").write_text("".join(f"video-{i:06d}\n" for i in range(count)))
            (root / f"m-{count}.yaml").write_text(
                f"version: 1\nbatch: cost{count}\njobs:\n  - {{name: all, "
                f"videos: {{file: ids-{count}.txt}}, params: {{Count: 1}}}}\n"
            )
        with emulator(root, "--qps", "1000000") as served:
            # The tools take turns, round after round, so a slow spell of this shared VM hits both alike.
            for round_ in range(rounds):
                for name in tools:
                    measured = []
                    for count in (1, n):
                        if name.startswith("snapbatch"):
                            command = snapbatch_lifted(
                                root / f"m-{count}.yaml",
                                served.url,
                                root / f"s-{round_}-{count}-{tools.index(name)}.sqlite3",
                            )
                            if "--quota off" in name:  # the host's shared-quota file left out: what it costs
                                command += ["--quota", "off"]
                        else:
                            kind = "sdk3" if "V3" in name else "sdk"
                            command = baseline(kind, served.url, 1_000_000, 16, root / f"ids-{count}.txt")
                        measured.append(cpu_of(command, env))
                    (cpu1, _, _), (cpun, rss, wall) = measured
                    results[name].append(((cpun - cpu1) / (n - 1) * 1000, rss, n / wall))
    medians = {name: statistics.median(cpu for cpu, _, _ in runs) for name, runs in results.items()}
    reference = tools[2] if len(tools) > 2 else tools[1]
    # Each round's ratio is taken within the round (the reference ran moments before or after), so a slow spell
    # of this VM, which can last minutes, moves both sides of a ratio alike; the table gives their median and range.
    ratios = {
        name: [cpu / ref for (cpu, _, _), (ref, _, _) in zip(runs, results[reference], strict=True)]
        for name, runs in results.items()
    }
    rows = [
        [
            name,
            f"{medians[name]:.3f}",
            f"{min(c for c, _, _ in runs):.3f}-{max(c for c, _, _ in runs):.3f}",
            f"{statistics.median(ratios[name]):.2f}",
            f"{min(ratios[name]):.2f}-{max(ratios[name]):.2f}",
            f"{max(r for _, r, _ in runs):.0f}",
            f"{statistics.median(w for _, _, w in runs):.0f}",
        ]
        for name, runs in results.items()
    ]
    print(f"{n} calls each, limit lifted, same emulator; median of {rounds} interleaved rounds")
    print(
        table(
            [
                "client",
                "CPU s per 1,000 calls",
                "range",
                "ratio to SDK" if len(tools) > 2 else "ratio to --quota off",
                "ratio range",
                "peak RSS MiB",
                "calls/s (wall)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
