"""Search listings and the state file: listing pages are written through the state's one transaction (so a
replaced file stops a listing at its next page), and `plan` only ever reads a batch's state file."""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from snapbatch.emulator import EmulatorConfig
from snapbatch.emulator.catalogue import Catalogue
from snapbatch.errors import StateError
from snapbatch.models import Search
from snapbatch.run import state as state_module
from snapbatch.run.listings import ListingStore
from snapbatch.run.state import State
from tests.conftest import CliRunner
from tests.emulated import AK_ID, AK_SECRET, running

ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": AK_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": AK_SECRET, "HOME": "/nonexistent"}
T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())


def _catalogue(n: int) -> Catalogue:
    catalogue = Catalogue()
    for i in range(n):
        created = datetime.fromtimestamp(T0 + i * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        catalogue.add({"VideoId": f"v{i:07d}", "CateId": 7, "CreationTime": created, "Status": "Normal"})
    return catalogue


def _manifest(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            version: 1
            batch: s
            defaults: {Count: 1}
            jobs:
              - name: found
                videos: {search: "CateId = 7"}
              - name: listed
                videos: [v-extra-0001]
            """
        )
    )
    return path


def _replace(path: Path) -> None:
    """Put another SQLite file where ``path`` is (as a restore from backup would)."""
    other = path.with_name("other.sqlite3")
    sqlite3.connect(other).close()  # an empty database file
    os.replace(other, path)


def test_a_state_file_replaced_during_a_listing_stops_it_at_the_next_page(cli: CliRunner, tmp_path: Path) -> None:
    """The page answered after the state file was replaced is not committed into the lost file: the run
    exits 6 naming the replacement, asks for no further page and sends nothing."""
    manifest = _manifest(tmp_path)
    state_path = tmp_path / ".snapbatch" / "s.sqlite3"
    config = EmulatorConfig(qps=1000, search_qps=1000, catalogue=_catalogue(450))
    searches: list[dict[str, Any]] = []

    def on_call(entry: dict[str, Any]) -> None:
        # runs before the answer leaves the emulator: the client commits page 2 into the replaced file
        if entry.get("action") == "SearchMedia":
            searches.append(entry)
            if len(searches) == 2:
                _replace(state_path)

    with running(config) as emu:
        emu.emulator.observers.append(on_call)
        r = cli("run", str(manifest), "--endpoint", emu.url, "--qps", "1000", "--search-qps", "1000", env=ENV)
        actions = [c.get("action") for c in emu.emulator.calls]
    assert r.code == 6, r.err
    assert "was replaced by another file" in r.err
    assert actions.count("SearchMedia") == 2 and "SubmitSnapshotJob" not in actions


def test_listing_writes_check_the_locked_files_identity(tmp_path: Path) -> None:
    """A store on a run's locked State refuses a page once the file at its path is another one; the same
    store's earlier pages were committed through that State."""
    path = tmp_path / "s.sqlite3"
    state = State(path)
    state.lock(0.0)
    store = ListingStore(state)
    try:
        info = store.start("j", Search("CateId = 7"), 0.0)
        info = store.add_page(info, ["a", "b"], "t", 4)
        assert (info.pages, info.listed) == (1, 2)
        _replace(path)
        with pytest.raises(StateError, match="was replaced by another file"):
            store.add_page(info, ["c", "d"], "t", 4)
    finally:
        store.close()
        state.close()


def _user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def _frozen_state(cli: CliRunner, tmp_path: Path) -> tuple[Path, Path]:
    manifest = _manifest(tmp_path)
    config = EmulatorConfig(qps=1000, search_qps=1000, catalogue=_catalogue(150))
    with running(config) as emu:
        r = cli("run", str(manifest), "--endpoint", emu.url, "--qps", "1000", "--search-qps", "1000", env=ENV)
    assert r.code == 0, r.err
    state_path = tmp_path / ".snapbatch" / "s.sqlite3"
    assert state_path.exists() and not Path(f"{state_path}-wal").exists()
    return manifest, state_path


def test_plan_leaves_an_existing_state_file_untouched(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plan` reads the frozen listings of a state file written by an older snapbatch (one migration
    behind this one) without upgrading it: same bytes, same mtime, same schema version, no journal left."""
    manifest, state_path = _frozen_state(cli, tmp_path)
    before = state_path.read_bytes()
    version = _user_version(state_path)
    os.utime(state_path, (1_700_000_000, 1_700_000_000))
    # this snapbatch knows one migration more than the file has
    monkeypatch.setattr(state_module, "MIGRATIONS", (*state_module.MIGRATIONS, ("CREATE TABLE later (x)",)))
    monkeypatch.setattr(state_module, "SCHEMA_VERSION", state_module.SCHEMA_VERSION + 1)
    r = cli("plan", str(manifest), "--offline", "--format", "jsonl")
    assert r.code == 0, r.err
    videos = [json.loads(line)["params"]["VideoId"] for line in r.out.splitlines()]
    assert len(videos) == 151 and "v-extra-0001" in videos  # the frozen 150 and the listed one
    assert state_path.read_bytes() == before
    assert os.stat(state_path).st_mtime == 1_700_000_000
    assert _user_version(state_path) == version
    assert sorted(p.name for p in state_path.parent.iterdir()) == ["s.sqlite3"]


@pytest.mark.parametrize("how", ["--offline", "no credentials"])
def test_plan_with_a_search_job_and_no_state_creates_no_file(cli: CliRunner, tmp_path: Path, how: str) -> None:
    """Without a state file, `plan` of a manifest with a search job creates none (nor its folder)."""
    manifest = _manifest(tmp_path)
    r = cli("plan", str(manifest), *(["--offline"] if how == "--offline" else []), env={"HOME": str(tmp_path)})
    assert r.code == 0, r.err
    assert "v-extra-0001" in r.out
    assert not (tmp_path / ".snapbatch").exists()
