"""A run that starts while the manifest is still being ingested sends what the ingest brings in."""

from __future__ import annotations

from pathlib import Path

import anyio

from snapbatch.manifest.expand import expand, fingerprint
from snapbatch.manifest.load import load_manifest
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.runner import RunOptions, RunResult, run_batch
from snapbatch.run.state import State
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.emulated import AK_ID, AK_SECRET, running
from tests.test_run import _manifest


def test_an_ingest_that_ends_during_the_first_read_loses_nothing(tmp_path: Path) -> None:
    """The ingest commits its rows and ends between the run's read of pending rows and its question whether
    more are coming (here: when asked, it commits and says no more): the run still sends every request,
    instead of ending with them all pending (seen as a flaky 'exit 1, 0 submitted' on a loaded machine)."""
    manifest = load_manifest(_manifest(tmp_path, 3), {})
    state = State(tmp_path / "s.sqlite3")
    ingested = False

    def more_coming() -> bool:
        nonlocal ingested
        if not ingested:  # the ingest finishes at this very moment
            state.ingest(expand(manifest), fingerprint(manifest), manifest.batch)
            ingested = True
        return False

    async def go() -> RunResult:
        with anyio.fail_after(60):
            async with VodClient(emu.url, Credentials(AK_ID, AK_SECRET)) as client:
                return await run_batch(state, client, Limiter(RateWindow(100)), RunOptions(), more_coming=more_coming)

    try:
        with running() as emu:
            result = anyio.run(go)
        assert result.submitted == 3 and state.counts()["pending"] == 0
    finally:
        state.close()
