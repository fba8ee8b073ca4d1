"""Start a `snapbatch emulator` process for a benchmark and read what it saw."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from snapbatch.cli.main import EMULATOR_KEY_ID, EMULATOR_KEY_SECRET
from snapbatch.emulator import EmulatorProcess, busiest_window, emulator_process

KEY_ID, KEY_SECRET = EMULATOR_KEY_ID, EMULATOR_KEY_SECRET
BASELINES = Path(__file__).parent / "baselines.py"


def key_env() -> dict[str, str]:
    """This process's environment with the emulator's key as the AccessKey, for `snapbatch run`."""
    return {**os.environ, "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": KEY_SECRET}


def snapbatch_run(manifest: Path, url: str, *args: str) -> list[str]:
    """`snapbatch run` of ``manifest`` against the emulator at ``url``, with ``args``."""
    return [sys.executable, "-m", "snapbatch", "run", str(manifest), "--endpoint", url, *args]


def snapbatch_lifted(manifest: Path, url: str, state: Path) -> list[str]:
    """`snapbatch run` of ``manifest`` against ``url`` with the limit lifted, 16 in flight, state in ``state``."""
    return snapbatch_run(manifest, url, "--qps", "1000000", "--concurrency", "16", "--state", str(state))


def baseline(kind: str, url: str, qps: float, workers: int, ids: Path) -> list[str]:
    """The command running a baseline of bench/baselines.py (``sdk`` or ``aiolimiter``) with the emulator's key."""
    return [sys.executable, str(BASELINES), kind, url, KEY_ID, KEY_SECRET, f"{qps:g}", str(workers), str(ids)]


@contextmanager
def emulator(workdir: Path, *args: str) -> Iterator[EmulatorProcess]:
    """`snapbatch emulator --query-only ARGS` in a process of its own, logging to a fresh file under ``workdir``."""
    log = workdir / f"calls-{len(list(workdir.glob('calls-*')))}.jsonl"
    # query-only, as VOD's gateway: a parameter sent anywhere but the query string would be refused
    with emulator_process(log, "--query-only", *args) as served:
        yield served


def server_view(calls: list[dict[str, Any]]) -> dict[str, float]:
    """Accepted calls per second over the whole run (first to last arrival) and sustained (from the second
    call on: snapbatch's first call waits alone for proof that the key works), the busiest 1 s window, and
    how many calls were throttled."""
    accepted = sorted(c["mono"] for c in calls if c.get("outcome") == "accepted")
    arrivals = sorted(c["mono"] for c in calls)
    rate = (len(accepted) - 1) / (arrivals[-1] - arrivals[0]) if len(accepted) > 1 else 0.0
    sustained = (len(accepted) - 2) / (arrivals[-1] - arrivals[1]) if len(accepted) > 2 else 0.0
    return {
        "accepted": len(accepted),
        "rate": rate,
        "sustained": sustained,
        "busiest": busiest_window([c["mono"] for c in calls]),
        "throttled": sum(1 for c in calls if c.get("code", "").startswith("Throttling")),
    }
