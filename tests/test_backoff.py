"""Retry backoff, and the test switch that turns its waiting off (as stamina's set_testing does)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from snapbatch.emulator import EmulatorConfig
from snapbatch.manifest.expand import expand, fingerprint
from snapbatch.manifest.load import load_manifest
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.runner import RunOptions, RunResult, is_testing, run_batch, set_testing
from snapbatch.run.state import State
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.emulated import AK_ID, AK_SECRET, running
from tests.test_run import _manifest

# seed 1: the emulator's first roll is under 0.5 and its second over, so the one request fails once, then passes
FAIL_ONCE = EmulatorConfig(qps=1000, faults={"InternalError": 0.5}, seed=1)


@pytest.fixture
def real_backoff() -> Iterator[None]:
    set_testing(False)
    yield
    set_testing(True)


def _run(url: str, tmp_path: Path, options: RunOptions, rng: random.Random) -> RunResult:
    manifest = load_manifest(_manifest(tmp_path, 1), {})
    state = State(tmp_path / "s.sqlite3")
    state.ingest(expand(manifest), fingerprint(manifest), manifest.batch)

    async def go() -> RunResult:
        with anyio.fail_after(60):
            async with VodClient(url, Credentials(AK_ID, AK_SECRET)) as client:
                return await run_batch(state, client, Limiter(RateWindow(100)), options, rng=rng)

    try:
        return anyio.run(go)
    finally:
        state.close()


def test_a_retry_waits_its_backoff(tmp_path: Path, real_backoff: None) -> None:
    """Outside test mode, a failed call comes back no sooner than its backoff: a full-jitter draw from the
    run's generator, up to base * 2 for the first retry (seen on the emulator's own clock)."""
    options = RunOptions(backoff_base_s=0.2)
    expected_s = random.Random(5).uniform(0, 0.2 * 2)
    with running(FAIL_ONCE) as emu:
        result = _run(emu.url, tmp_path, options, random.Random(5))
        first, second = (c["mono"] for c in emu.emulator.calls)
    assert (result.submitted, result.retries) == (1, 1)
    assert second - first >= expected_s


def test_test_mode_retries_without_waiting(tmp_path: Path) -> None:
    """In test mode (on for this suite), a retry does not wait its backoff: with a backoff of an hour the
    run still ends at once, the retry counted as one."""
    assert is_testing()
    options = RunOptions(backoff_base_s=3600.0, backoff_cap_s=3600.0)
    with running(FAIL_ONCE) as emu:
        result = _run(emu.url, tmp_path, options, random.Random(5))
        assert len(emu.emulator.calls) == 2
    assert (result.submitted, result.retries) == (1, 1)
