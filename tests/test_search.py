"""Search jobs: the Match subset, the emulator's SearchMedia over a 250,000-video catalogue, the listing frozen
into the state, resumed after kill -9, and `plan`/`status` around it."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from snapbatch.emulator import Emulator, EmulatorConfig, serve
from snapbatch.emulator.catalogue import Catalogue, CatalogueError, load_catalogue
from snapbatch.manifest.match import MatchError, parse
from snapbatch.models import Search
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.listings import ListingError, ListingStore, list_videos
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.conftest import ROOT, CliRunner
from tests.emulated import AK_ID, AK_SECRET, running

ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": AK_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": AK_SECRET, "HOME": "/nonexistent"}
N = 250_000
STATUSES = ["Normal", "Checking", "Blocked", "UploadSucc", "TranscodeFail"]
T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rows(n: int = N, seed: int = 12) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append(
            {
                "VideoId": f"{i:08x}{rng.getrandbits(96):024x}",
                "CateId": rng.choice((1000, 1234, 2000, 3000)),
                "CreationTime": _iso(T0 + rng.randrange(365 * 86400)),
                "Status": rng.choice(STATUSES),
                "Title": rng.choice(("news", "sport", "series-x ep", "trailer")) + f" {i}",
                "Tags": rng.sample(["series-x", "hd", "kids", "archive"], rng.randrange(3)),
            }
        )
    return rows


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return _rows()


@pytest.fixture(scope="module")
def catalogue(rows: list[dict[str, Any]]) -> Catalogue:
    catalogue = Catalogue()
    for row in rows:
        catalogue.add(row)
    return catalogue


def _expected(rows: list[dict[str, Any]], keep: Any, descending: bool = True) -> list[str]:
    """Computed from the generated rows alone: filter, then CreationTime order with ties in catalogue order."""
    chosen = [(r["CreationTime"], i, r["VideoId"]) for i, r in enumerate(rows) if keep(r)]
    if descending:
        chosen.sort(key=lambda c: (_neg(c[0]), c[1]))
    else:
        chosen.sort(key=lambda c: (c[0], c[1]))
    return [c[2] for c in chosen]


def _neg(iso: str) -> int:
    return -int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _scroll(catalogue: Catalogue, match: str, sort_by: str = "CreationTime:Desc") -> list[str]:
    """Every result through the ScrollToken traversal, page by page, as a client would."""
    out: list[str] = []
    token = ""
    page = 1
    while True:
        params = {"Match": match, "SortBy": sort_by, "PageNo": str(page), "PageSize": "100"}
        if token:
            params["ScrollToken"] = token
        body = catalogue.search(params, "r")
        token = body["ScrollToken"]
        out += [m["MediaId"] for m in body["MediaList"]]
        if len(body["MediaList"]) < 100:
            return out
        page += 1


QUERIES = [
    ("CateId = 1234", lambda r: r["CateId"] == 1234),
    (
        "Status in ('Normal','Checking') and CreationTime = ['2026-03-01T00:00:00Z','2026-04-01T00:00:00Z')",
        lambda r: r["Status"] in ("Normal", "Checking") and "2026-03-01T00:00:00Z" <= r["CreationTime"] < "2026-04-01",
    ),
    (
        "(Tags = 'series-x' or Title = 'trailer') and Status = 'Normal' and CateId in (1000, 3000)",
        lambda r: (
            ("series-x" in r["Tags"] or "trailer" in r["Title"])
            and r["Status"] == "Normal"
            and r["CateId"] in (1000, 3000)
        ),
    ),
    ("Title = 'series-x'", lambda r: "series-x" in r["Title"]),
]


@pytest.mark.parametrize(("match", "keep"), QUERIES, ids=[q[0][:30] for q in QUERIES])
def test_catalogue_search_gives_exactly_the_matching_ids(
    catalogue: Catalogue, rows: list[dict[str, Any]], match: str, keep: Any
) -> None:
    """A ScrollToken traversal of the 250,000-video catalogue returns exactly the videos the query selects,
    in CreationTime order; the offline parser accepts the same expression."""
    parse(match)
    assert _scroll(catalogue, match) == _expected(rows, keep)


def test_ascending_sort(catalogue: Catalogue, rows: list[dict[str, Any]]) -> None:
    """SortBy CreationTime:Asc reverses the order (ties stay in catalogue order)."""
    got = _scroll(catalogue, "CateId = 2000", "CreationTime:Asc")
    assert got == _expected(rows, lambda r: r["CateId"] == 2000, descending=False)


def test_paging_limits(catalogue: Catalogue) -> None:
    """PageNo paging stops at 5,000 results; a ScrollToken may move at most 100 records from its last page,
    and belongs to its own query."""
    base = {"Match": "CateId = 1234", "PageSize": "100"}
    assert len(catalogue.search({**base, "PageNo": "50"}, "r")["MediaList"]) == 100
    with pytest.raises(CatalogueError, match="5000"):
        catalogue.search({**base, "PageNo": "51"}, "r")
    token = catalogue.search({**base, "PageNo": "1"}, "r")["ScrollToken"]
    assert catalogue.search({**base, "PageNo": "2", "ScrollToken": token}, "r")["MediaList"]
    with pytest.raises(CatalogueError, match="100 records"):
        catalogue.search({**base, "PageNo": "4", "ScrollToken": token}, "r")
    with pytest.raises(CatalogueError, match="ScrollToken"):
        catalogue.search({**base, "Match": "CateId = 1000", "PageNo": "3", "ScrollToken": token}, "r")


@pytest.mark.parametrize(
    ("text", "offset", "words"),
    [
        ("Status < 'Normal'", 7, "not an operator"),
        ("CateId = 1 or CateId = 2", 11, "inside parentheses"),
        ("CreationTime = 'x'", 13, "takes a range"),
        ("CateId = 'abc'", 10, "whole number"),
        ("(CateId = 1 and Status = 'Normal' or CateId = 2)", 34, "mixing"),
        ("CreationTime = ('2026-02-30T00:00:00Z','2027-01-01T00:00:00Z')", 17, "not a real time"),
        ("CreationTime = ('2026-13-01T00:00:00Z','2027-01-01T00:00:00Z')", 17, "not a real time"),
        ("CreationTime = ['2026-01-01T00:00:00Z','2026-01-01T00:00:00Z')", 15, "range is empty"),
        ("CateId = 1\u3000and Status = 'Normal'", 10, "not allowed"),  # a full-width space
        ("CateId = 1 and\xa0Status = 'Normal'", 14, "not allowed"),  # a no-break space
        ("CateId = \u0661\u0662", 9, "not allowed"),  # Arabic-Indic digits
        ("CateId = '\u0661\u0662'", 10, "whole number"),
    ],
)
def test_match_errors_point_at_the_offending_character(text: str, offset: int, words: str) -> None:
    """The parser says what is wrong and where, as an offset the manifest loader turns into LINE:COL."""
    with pytest.raises(MatchError) as caught:
        parse(text)
    assert caught.value.offset == offset and words in caught.value.message


def _search_manifest(tmp_path: Path, match: str, extra_ids: list[str]) -> Path:
    (tmp_path / "ids.txt").write_text("".join(f"{v}\n" for v in extra_ids))
    path = tmp_path / "m.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            batch: s
            defaults: {{Count: 1}}
            jobs:
              - name: found
                videos:
                  search: {json.dumps(match)}
              - name: listed
                videos: {{file: ids.txt}}
            """
        )
    )
    return path


def test_run_freezes_the_listing_and_relist_takes_it_again(
    cli: CliRunner, tmp_path: Path, catalogue: Catalogue, rows: list[dict[str, Any]]
) -> None:
    """A search job runs end to end: exactly the matching videos are sent, an ID file's overlap is folded;
    a video uploaded later is not sent by the next run (the list is frozen), and `run --relist` adds it."""
    match = "CateId = 1234 and Status = 'Blocked' and CreationTime = ('2026-06-01T00:00:00Z','2026-08-01T00:00:00Z')"
    expected = _expected(
        rows,
        lambda r: r["CateId"] == 1234 and r["Status"] == "Blocked" and "2026-06-01" < r["CreationTime"] < "2026-08-01",
    )
    assert 1000 < len(expected) < 5000
    manifest = _search_manifest(tmp_path, match, [*expected[:10], "someone-else-0001"])
    config = EmulatorConfig(qps=1000, search_qps=1000, catalogue=catalogue)
    with running(config) as emu:
        args = ("run", str(manifest), "--endpoint", emu.url, "--qps", "1000", "--search-qps", "500", "--json")
        first = cli(*args, env=ENV)
        assert first.code == 0, first.err
        sent = [c["params"]["VideoId"] for c in emu.emulator.calls if c.get("action") == "SubmitSnapshotJob"]
        assert sorted(sent) == sorted([*expected, "someone-else-0001"])  # overlap folded: each video once
        searches = [c for c in emu.emulator.calls if c.get("action") == "SearchMedia"]
        assert all(c["params"]["PageSize"] == "100" and "Fields" not in c["params"] for c in searches)
        assert all("ScrollToken" in c["params"] for c in searches[1:])
        assert "videos listed now" in first.err

        catalogue.add(
            {"VideoId": "uploaded-later", "CateId": 1234, "Status": "Blocked", "CreationTime": _iso(T0 + 170 * 86400)}
        )
        try:
            second = cli(*args, env=ENV)
            status = cli("status", str(manifest), "--json")
            assert second.code == 0 and json.loads(second.out)["submitted"] == 0, second.err
            assert "frozen" in second.err
            listing = json.loads(status.out)["listings"][0]
            assert (listing["job"], listing["videos"], listing["complete"]) == ("found", len(expected), True)
            assert listing["taken_at"].endswith("UTC")
            third = cli(*args, "--relist", env=ENV)
            assert third.code == 0 and json.loads(third.out)["submitted"] == 1, third.err
        finally:
            catalogue.ids.pop(), catalogue.cate.pop(), catalogue.ctime.pop(), catalogue.status.pop()
            catalogue.titles.pop(), catalogue.tags.pop()


def test_changed_query_needs_relist(cli: CliRunner, tmp_path: Path, catalogue: Catalogue) -> None:
    """A frozen list is never silently swapped for another query's: the run exits 2 and names --relist."""
    config = EmulatorConfig(qps=1000, search_qps=1000, catalogue=catalogue)
    with running(config) as emu:
        manifest = _search_manifest(tmp_path, "VideoId in ('nope')", ["v-000001"])
        assert cli("run", str(manifest), "--endpoint", emu.url, env=ENV).code == 0
        _search_manifest(tmp_path, "VideoId in ('other')", ["v-000001"])
        again = cli("run", str(manifest), "--endpoint", emu.url, env=ENV)
    assert again.code == 2 and "--relist" in again.err


_KILLER = """
import os, signal, sys, anyio
from pathlib import Path
from snapbatch.models import Search
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.listings import ListingError, ListingStore, list_videos
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials

url, path, match, ak, secret = sys.argv[1:]

def on_page(info):
    if info.pages == 7:  # committed; now die as hard as a process can
        os.kill(os.getpid(), signal.SIGKILL)

async def main():
    async with VodClient(url, Credentials(ak, secret, None, "test")) as client:
        await list_videos(ListingStore(Path(path)), "found", Search(match), client, Limiter(RateWindow(1000)),
                          on_page=on_page)

anyio.run(main)
"""


def test_listing_resumes_after_kill_9(tmp_path: Path, catalogue: Catalogue, rows: list[dict[str, Any]]) -> None:
    """A listing killed with SIGKILL after page 7 continues at page 8 with its ScrollToken and ends with
    exactly the set an uninterrupted listing gives; every page is committed before the next is asked for."""
    match = "CateId = 3000 and Status = 'Checking'"
    expected = _expected(rows, lambda r: r["CateId"] == 3000 and r["Status"] == "Checking")
    state = tmp_path / "s.sqlite3"
    config = EmulatorConfig(qps=1000, search_qps=1000, catalogue=catalogue)
    with running(config) as emu:
        killed = subprocess.run(
            [sys.executable, "-c", _KILLER, emu.url, str(state), match, AK_ID, AK_SECRET], check=False
        )
        assert killed.returncode == -9
        store = ListingStore(state)
        info = store.info("found")
        assert info is not None and (info.pages, info.listed, info.complete) == (7, 700, False)
        before = len(emu.emulator.calls)

        committed: list[int] = []

        class Checked(VodClient):
            async def call(self, action: str, params: Any) -> Any:
                now = store.info("found")
                assert now is not None
                committed.append(now.listed)
                assert now.listed == (int(params["PageNo"]) - 1) * 100  # the earlier pages are all in the state
                return await super().call(action, params)

        async def resume() -> None:
            async with Checked(emu.url, Credentials(AK_ID, AK_SECRET, None, "test")) as client:
                await list_videos(store, "found", Search(match), client, Limiter(RateWindow(1000)))

        anyio.run(resume)
        resumed = emu.emulator.calls[before]
    assert resumed["params"]["PageNo"] == "8" and resumed["params"].get("ScrollToken")
    assert list(store.videos("found")) == expected
    done = store.info("found")
    assert done is not None and done.complete and done.listed == len(expected)
    store.close()


def test_plan_offline_names_search_jobs(cli: CliRunner, tmp_path: Path) -> None:
    """Without credentials or with --offline, plan shows the rest of the manifest and names the search jobs."""
    manifest = _search_manifest(tmp_path, "CateId = 1", ["v-000001"])
    offline = cli("plan", str(manifest), "--offline")
    assert offline.code == 0 and "v-000001" in offline.out and "found" in offline.err and "--offline" in offline.err
    nocreds = cli("plan", str(manifest), env={"HOME": str(tmp_path)})
    assert nocreds.code == 0 and "v-000001" in nocreds.out
    assert "cannot list search jobs found (listing needs credentials)" in nocreds.err


def test_plan_lists_search_results(
    cli: CliRunner, tmp_path: Path, catalogue: Catalogue, rows: list[dict[str, Any]]
) -> None:
    """With credentials, plan lists the search job through SearchMedia and shows its requests, freezing nothing."""
    expected = _expected(rows, lambda r: r["VideoId"].startswith("0000000"))
    ids = ", ".join(f"'{v}'" for v in expected)
    manifest = _search_manifest(tmp_path, f"VideoId in ({ids})", [])
    (tmp_path / "ids.txt").write_text("v-000001\n")
    with running(EmulatorConfig(search_qps=1000, catalogue=catalogue)) as emu:
        plan = cli("plan", str(manifest), "--endpoint", emu.url, "--format", "jsonl", env=ENV)
    assert plan.code == 0, plan.err
    videos = [json.loads(line)["params"]["VideoId"] for line in plan.out.splitlines()]
    assert videos == [*expected, "v-000001"]
    assert not (tmp_path / ".snapbatch").exists()


def test_listing_streams_into_the_store(tmp_path: Path) -> None:
    """The frozen list is read back in chunks by a generator, not loaded whole."""
    store = ListingStore(tmp_path / "x.sqlite3")
    info = store.start("j", Search("CateId = 1"), 0.0)
    for page in range(3):
        info = store.add_page(info, [f"v{page}-{i}" for i in range(100)], "t", 300)
    videos = store.videos("j")
    assert iter(videos) is videos  # a generator
    assert next(videos) == "v0-0" and sum(1 for _ in videos) == 299
    store.close()


def test_search_example_is_in_the_valid_corpus() -> None:
    """jobs.search.example.yaml is in the valid corpus byte for byte, as jobs.example.yaml is."""
    corpus = ROOT / "tests" / "manifests" / "valid" / "jobs.search.example.yaml"
    assert corpus.read_bytes() == (ROOT / "jobs.search.example.yaml").read_bytes()


def test_search_example_runs_end_to_end_from_the_readme(cli: CliRunner, tmp_path: Path) -> None:
    """The README's preview: plan lists 142 requests (one folded), run sends exactly those, status says when."""
    shutil.copy(ROOT / "jobs.search.example.yaml", tmp_path)
    shutil.copytree(ROOT / "catalog", tmp_path / "catalog")
    manifest = str(tmp_path / "jobs.search.example.yaml")
    catalogue = load_catalogue(tmp_path / "catalog" / "catalogue.example.jsonl")
    with running(EmulatorConfig(catalogue=catalogue)) as emu:
        plan = cli("plan", manifest, "--endpoint", emu.url, "--summary", env=ENV)
        run = cli("run", manifest, "--endpoint", emu.url, "--json", env=ENV)
        accepted = [c["params"] for c in emu.emulator.calls if c.get("outcome") == "accepted"]
        sent = [(p["VideoId"], p["Count"]) for p in accepted]  # a video in both searches: two parameter sets
    status = cli("status", manifest)
    assert plan.code == 0 and "142 requests (1 duplicate folded)" in plan.out, plan.err
    assert run.code == 0 and json.loads(run.out)["submitted"] == 142, run.err
    assert len(sent) == len(set(sent)) == 142
    assert "search job category-1234: 83 videos, list taken" in status.out
    assert "search job series-x: 59 videos, list taken" in status.out
    # status counts the frozen lists' requests as the run did: nothing changed, nothing dropped
    counts = json.loads(cli("status", manifest, "--json").out)["counts"]
    assert (counts["submitted"], counts["not_in_manifest"], counts.get("dropped", 0)) == (142, 0, 0)
    assert counts["submitted"] == 142 and "changed" not in status.out and "no longer" not in status.out, status.out


def test_listing_rides_out_throttling_and_errors(
    tmp_path: Path, catalogue: Catalogue, rows: list[dict[str, Any]]
) -> None:
    """Throttling.User and 5xx answers during a listing slow it (the limiter is told) and retry the same
    page; the list comes out exactly as without faults."""
    match = "CateId = 2000 and Status = 'UploadSucc'"
    expected = _expected(rows, lambda r: r["CateId"] == 2000 and r["Status"] == "UploadSucc")
    config = EmulatorConfig(
        search_qps=1000, catalogue=catalogue, faults={"Throttling.User": 0.2, "InternalError": 0.1}, seed=5
    )
    store = ListingStore(tmp_path / "s.sqlite3")
    limiter = Limiter(RateWindow(1000))
    with running(config) as emu:

        async def go() -> None:
            async with VodClient(emu.url, Credentials(AK_ID, AK_SECRET, None, "test")) as client:
                await list_videos(
                    store, "j", Search(match), client, limiter, rng=random.Random(1), backoff_base_s=0.001
                )

        anyio.run(go)
        codes = [c.get("code") for c in emu.emulator.calls]
    assert "Throttling.User" in codes and "InternalError" in codes
    assert limiter.window.throttles  # the limiter heard about the throttling
    assert list(store.videos("j")) == expected
    store.close()


def test_listing_progress_is_shown(
    cli: CliRunner, tmp_path: Path, catalogue: Catalogue, rows: list[dict[str, Any]]
) -> None:
    """While a search job is listed, the progress line says so: videos of the total, pages (resumable).
    The listing takes at least 1.5 s (15+ pages at 10/s, the limiter's guarantee); progress comes every 0.05 s."""
    window = "CreationTime = ('2026-01-01T00:00:00Z','2026-03-01T00:00:00Z')"
    manifest = _search_manifest(tmp_path, f"CateId = 1234 and Status = 'Normal' and {window}", ["v-000001"])
    total = len(
        _expected(
            rows,
            lambda r: (
                r["CateId"] == 1234
                and r["Status"] == "Normal"
                and r["CreationTime"] > "2026-01-01T00:00:00Z"
                and r["CreationTime"] < "2026-03-01T00:00:00Z"
            ),
        )
    )
    assert total > 1500
    with running(EmulatorConfig(qps=1000, search_qps=1000, catalogue=catalogue)) as emu:
        r = cli(
            "run",
            str(manifest),
            "--endpoint",
            emu.url,
            "--qps",
            "1000",
            "--search-qps",
            "10",
            "--progress-every",
            "0.05",
            env=ENV,
        )
    assert r.code == 0, r.err
    assert "listing job found through SearchMedia:" in r.err and f"of {total} videos" in r.err


def test_builtin_emulator_with_a_catalogue_and_plan_of_its_rehearsal(cli: CliRunner, tmp_path: Path) -> None:
    """`run --emulator --catalogue` lists and sends the example; `plan --emulator` then shows the frozen
    lists of that rehearsal, and before any rehearsal names the search jobs instead of calling anything."""
    shutil.copy(ROOT / "jobs.search.example.yaml", tmp_path)
    shutil.copytree(ROOT / "catalog", tmp_path / "catalog")
    manifest = str(tmp_path / "jobs.search.example.yaml")
    before = cli("plan", manifest, "--emulator", "--summary")
    assert before.code == 0 and "no `run --emulator` has listed them yet" in before.err
    assert "1 request" in before.out
    run = cli("run", manifest, "--emulator", "--catalogue", str(tmp_path / "catalog" / "catalogue.example.jsonl"))
    assert run.code == 0, run.err
    after = cli("plan", manifest, "--emulator", "--summary")
    assert after.code == 0 and "142 requests" in after.out and "83 videos frozen" in after.err


def test_validate_names_search_jobs(cli: CliRunner) -> None:
    """validate counts only what it can without the network and names the search jobs, in text and JSON."""
    text = cli("validate", str(ROOT / "jobs.search.example.yaml"))
    assert text.code == 0 and "valid, 1 request (+ 2 search jobs, listed when run)" in text.out
    doc = json.loads(cli("validate", str(ROOT / "jobs.search.example.yaml"), "--format", "json").out)
    assert doc["manifests"][0]["search_jobs"] == ["category-1234", "series-x"]


def test_a_run_stopped_while_listing_exits_5_and_the_next_one_finishes(
    cli: CliRunner, tmp_path: Path, catalogue: Catalogue, rows: list[dict[str, Any]]
) -> None:
    """--max-duration 0.5 s cuts a listing that takes at least 3 s (16+ pages at 5/s): exit 5, the listing
    is unfinished and resumable; the next run completes it and sends exactly the matching set."""
    window = "CreationTime = ('2026-01-01T00:00:00Z','2026-03-01T00:00:00Z')"
    manifest = _search_manifest(tmp_path, f"CateId = 1234 and Status = 'Normal' and {window}", ["v-000001"])
    expected = _expected(
        rows,
        lambda r: (
            r["CateId"] == 1234
            and r["Status"] == "Normal"
            and "2026-01-01T00:00:00Z" < r["CreationTime"] < "2026-03-01T00:00:00Z"
        ),
    )
    with running(EmulatorConfig(qps=1000, search_qps=1000, catalogue=catalogue)) as emu:
        base = ("run", str(manifest), "--endpoint", emu.url, "--qps", "1000")
        cut = cli(*base, "--search-qps", "5", "--max-duration", "0.5", env=ENV)
        assert cut.code == 5, cut.err
        assert "the listing of search jobs found is unfinished" in cut.err
        info = ListingStore.read(tmp_path / ".snapbatch" / "s.sqlite3")[0]
        assert not info.complete and info.listed < len(expected)
        done = cli(*base, "--search-qps", "1000", "--json", env=ENV)
        accepted = [c["params"]["VideoId"] for c in emu.emulator.calls if c.get("outcome") == "accepted"]
    assert done.code == 0, done.err
    assert sorted(accepted) == sorted([*expected, "v-000001"])


def test_emulator_search_limit_is_its_own_50_per_second(catalogue: Catalogue) -> None:
    """SearchMedia has its own window, 50 calls/s by default: the 51st within a second is Throttling.User,
    while SubmitSnapshotJob's window (qps 3 here) is untouched by the searches."""
    now = [1000.0]
    emulator = Emulator(
        EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}, qps=3, catalogue=catalogue), mono=lambda: now[0]
    )

    async def go() -> tuple[list[str | None], str]:
        codes: list[str | None] = []
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, emulator)
            async with VodClient(f"http://127.0.0.1:{port}", Credentials(AK_ID, AK_SECRET, None, "test")) as client:
                for i in range(51):
                    now[0] = 1000.0 + i * 0.019  # 51 calls within 0.97 s
                    outcome, body = await client.call("SearchMedia", {"Match": "CateId = 1", "PageSize": "1"})
                    codes.append(outcome.code if body is None or "MediaList" not in body else None)
                submit = await client.submit({"VideoId": "v", "Count": "1"})
            tg.cancel_scope.cancel()
        return codes, submit.kind

    codes, submitted = anyio.run(go)
    assert codes[:50] == [None] * 50 and codes[50] == "Throttling.User"
    assert submitted == "accepted"


def _list_from_fixed_answer(tmp_path: Path, answer: dict[str, Any]) -> tuple[ListingStore, Any, int]:
    """List through a loopback server that gives every SearchMedia call the same answer: the store, the
    listing's result (or the ListingError) and how many calls it took."""
    import http.server
    import threading

    calls = 0

    class Fixed(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            nonlocal calls
            calls += 1
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fixed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = ListingStore(tmp_path / "s.sqlite3")
    try:

        async def go() -> Any:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            async with VodClient(url, Credentials(AK_ID, AK_SECRET, None, "test")) as client:
                try:
                    return await list_videos(store, "j", Search("CateId = 404"), client, Limiter(RateWindow(1000)))
                except ListingError as exc:
                    return exc

        result = anyio.run(go)
    finally:
        server.shutdown()
        server.server_close()
    return store, result, calls


def test_an_answer_without_media_list_and_total_0_is_an_empty_listing(tmp_path: Path) -> None:
    """A query that matches nothing may come back without a MediaList (Total 0): the listing completes with no
    videos instead of failing as a refused query."""
    store, info, _ = _list_from_fixed_answer(tmp_path, {"RequestId": "r-1", "Total": 0})
    assert info.complete and info.listed == 0 and list(store.videos("j")) == []
    store.close()


def test_a_query_beyond_2_million_fails_at_the_first_page(tmp_path: Path) -> None:
    """A Total above the 2,000,000 a ScrollToken traversal reaches stops the listing at once (exit 2, narrow
    the query), not after 20,000 calls."""
    media = [{"MediaId": f"v{i:031d}", "MediaType": "video"} for i in range(100)]
    answer = {"RequestId": "r-1", "Total": 2_000_001, "ScrollToken": "t" * 32, "MediaList": media}
    store, error, calls = _list_from_fixed_answer(tmp_path, answer)
    assert isinstance(error, ListingError) and error.exit == "usage" and "2000000" in str(error)
    assert calls == 1
    store.close()
