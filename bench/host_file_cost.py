"""CPU of the host-file shared quota: one reservation and its confirmation, on an injected clock.

    python bench/host_file_cost.py [ROUNDS] [NAME=path/to/quota.py ...]

5,000 pairs at qps 30 (each slot one interval after the last) and at 1,000 calls/s under a lifted limit
(qps 1,000,000: the file holds the last 1.3 s, about 1,300 reservations), in a fresh file under a temporary
directory; the table gives the CPU (process time) per pair, the least and the median over ROUNDS rounds
(default 7). Other versions of snapbatch/run/quota.py given as NAME=PATH are measured in the same process,
round by round in turn with the installed one, so that a busy machine weighs on all of them alike.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))
from _measure import table

import snapbatch.run.quota

WINDOW_S = 1.015
PAIRS = 5000


def load(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"quota_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def cpu_per_pair_us(quota: Any, qps: float) -> float:
    clock = [100.0]
    cap = max(1, int(qps))
    step_s = 0.001 if qps > 1000 else 0.0  # 1,000 calls/s once the limit is lifted

    async def go(store: Any) -> float:
        began = time.process_time()
        for _ in range(PAIRS):
            reservation = await store.reserve(WINDOW_S, WINDOW_S / qps, cap)
            clock[0] += reservation.delay_s
            await store.confirm(reservation)
            clock[0] += step_s
        return time.process_time() - began

    with tempfile.TemporaryDirectory() as root:
        store = quota.HostFileStore(Path(root) / "quota" / "k.json", clock=lambda: clock[0])
        try:
            return anyio.run(go, store) / PAIRS * 1e6
        finally:
            anyio.run(store.aclose)


def main() -> None:
    args = sys.argv[1:]
    rounds = int(args.pop(0)) if args and "=" not in args[0] else 7
    versions: dict[str, Any] = {"installed": snapbatch.run.quota}
    for arg in args:
        name, path = arg.split("=", 1)
        versions[name] = load(name, path)
    figures: dict[tuple[str, float], list[float]] = {(name, qps): [] for name in versions for qps in (30, 1e6)}
    for _ in range(rounds):
        for qps in (30, 1e6):
            for name, quota in versions.items():
                figures[(name, qps)].append(cpu_per_pair_us(quota, qps))
    rows = [
        [name, f"{qps:,.0f}", f"{min(runs):.1f}", f"{statistics.median(runs):.1f}"]
        for (name, qps), runs in figures.items()
    ]
    print(f"CPU per reservation + confirmation, {PAIRS:,} pairs, {rounds} rounds")
    print(table(["version", "qps", "least µs/pair", "median µs/pair"], rows))


if __name__ == "__main__":
    main()
