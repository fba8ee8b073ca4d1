"""Instructions a call, counted by valgrind's callgrind: the same comparison as bench/client_cost.py and
bench/http_stack.py, in a unit this shared VM cannot bend (its CPU seconds a call move by up to a third from
minute to minute; the instruction count of the same command repeats to within a fraction of a percent).

    python bench/instructions.py [SMALL,LARGE]

Each command runs under callgrind twice, with SMALL and with LARGE calls (default 100 and 600), against one
emulator (query-only, limit lifted, 16 in flight); the difference divided by LARGE - SMALL is the marginal
count a call, without start-up and imports. It counts user-space instructions of the client's process only:
not the kernel's work for its system calls (SQLite's writes, the host file's lock), which CPU seconds include,
and not the emulator. So it ranks what the Python code costs; bench/client_cost.py gives the seconds.

Rows: the official SDK (aliyun-python-sdk-core) in a 16-thread pool; ``snapbatch run`` by default and with
``--quota off``; and, from bench/http_stack.py, snapbatch's VodClient alone and httpx's transport alone (no
runner, no state).
Needs valgrind (Debian: apt-get install valgrind). Slow: about 15 minutes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _emulator import baseline, emulator, key_env, snapbatch_lifted
from _measure import table

HTTP_STACK = Path(__file__).parent / "http_stack.py"
# Not the V3 SDK: its count is not repeatable under callgrind (2.76, 1.77 and 2.27 M a call in three runs, and
# once fewer instructions for 600 calls than for 100), its connections' reuse depending on how callgrind
# schedules its 16 threads; bench/client_cost.py gives its seconds.
ROWS = (
    "official SDK, 16 threads",
    "snapbatch run (16 in flight)",
    "snapbatch run --quota off",
    "snapbatch VodClient.submit alone",
    "httpx transport alone",
)


def instructions(command: list[str], env: dict[str, str]) -> int:
    """User-space instructions callgrind counts for ``command`` (its own process, not its children)."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{command} failed under callgrind: {done.stderr[-2000:]}")
    return int(found.group(1))


def command_for(row: str, url: str, root: Path, count: int) -> list[str]:
    ids = root / f"ids-{count}.txt"
    if row.startswith("official"):
        return baseline("sdk3" if "V3" in row else "sdk", url, 1_000_000, 16, ids)
    if row.startswith("snapbatch run"):
        command = snapbatch_lifted(root / f"m-{count}.yaml", url, root / f"s-{time.monotonic_ns()}.sqlite3")
        return command + (["--quota", "off"] if "--quota off" in row else [])
    variant = "snapbatch VodClient.submit, 16 tasks" if "VodClient" in row else "httpx transport, 16 tasks"
    # http_stack's child warms up with 100 calls of its own before the counted ones: the same in both runs
    return [sys.executable, str(HTTP_STACK), "--child", variant, url, str(count)]


def main() -> None:
    small, large = (int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "100,600").split(","))
    env = {**key_env(), "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}
    counts: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for count in (small, large):
            (root / f"ids-{count}.txt").write_text("".join(f"video-{i:06d}\n" for i in range(count)))
            (root / f"m-{count}.yaml").write_text(
                f"version: 1\nbatch: count{count}\njobs:\n  - {{name: all, "
                f"videos: {{file: ids-{count}.txt}}, params: {{Count: 1}}}}\n"
            )
        with emulator(root, "--qps", "1000000") as served:
            for row in ROWS:
                few, many = (instructions(command_for(row, served.url, root, n), env) for n in (small, large))
                counts[row] = (many - few) / (large - small)
                print(f"{row}: {counts[row] / 1e6:.3f} M", file=sys.stderr, flush=True)
    sdk = counts[ROWS[0]]
    print(f"user-space instructions a call (callgrind), {small} and {large} calls, limit lifted, 16 in flight")
    print(
        table(
            ["client", "instructions a call", "ratio to SDK"],
            [[row, f"{n / 1e6:.3f} M", f"{n / sdk:.2f}"] for row, n in counts.items()],
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
