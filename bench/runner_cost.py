"""CPU of a run's own bookkeeping: the runner, the limiter and the state, without HTTP.

    python bench/runner_cost.py [CALLS] [ROUNDS]

Runs `run_manifest` in this process (qps lifted, 16 in flight, no shared quota) with a sender that answers
every call at once with a JobId, after a warm-up run of 200, and prints the CPU (process time, every thread)
a call, each round and the median. What the HTTP exchange costs is bench/http_stack.py's to say; this is
the rest. To compare with other code, run it with PYTHONPATH naming that tree.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

os.environ["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"

from snapbatch.manifest.load import load_manifest
from snapbatch.models import Outcome, OutcomeKind
from snapbatch.run import session
from snapbatch.run.quota import Pacing
from snapbatch.run.runner import RunOptions
from snapbatch.vod.credentials import Credentials


class AnswersAtOnce:
    """Stands in for VodClient: every call accepted after one turn of the event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def __aenter__(self) -> AnswersAtOnce:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def submit(self, params: dict[str, str]) -> Outcome:
        await anyio.sleep(0)
        return Outcome(OutcomeKind.ACCEPTED, job_id="job", request_id="request", http_status=200)


def one_run(root: Path, name: str, calls: int) -> float:
    (root / f"{name}.txt").write_text("".join(f"{name}-{i:06d}\n" for i in range(calls)))
    (root / f"{name}.yaml").write_text(
        f"version: 1\nbatch: {name}\njobs:\n  - {{name: all, videos: {{file: {name}.txt}}, params: {{Count: 1}}}}\n"
    )
    manifest = load_manifest(root / f"{name}.yaml", {})
    started = time.process_time()
    session.run_manifest(
        manifest,
        root / f"{name}.sqlite3",
        "http://127.0.0.1:9",  # never called
        Credentials("id", "secret"),
        qps=1_000_000,
        options=RunOptions(concurrency=16),
        pacing=Pacing("off"),
        handle_signals=False,
    )
    return (time.process_time() - started) / calls * 1000


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    session.VodClient = AnswersAtOnce  # type: ignore[misc,assignment]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one_run(root, "warmup", 200)
        results = [one_run(root, f"r{i}", calls) for i in range(rounds)]
    print(f"runner + limiter + state, {calls} calls a round, sender answering at once; code from {session.__file__}")
    print("CPU ms a call:", " ".join(f"{r:.3f}" for r in results), f"median {statistics.median(results):.3f}")


if __name__ == "__main__":
    main()
