"""`report --html`: one self-contained page, opened in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from snapbatch.emulator import EmulatorConfig
from snapbatch.htmlreport import GLANCE, render_html
from snapbatch.models import FAILED, Outcome
from snapbatch.run.overview import MAX_BUCKETS, bucket_width, read_overview
from snapbatch.run.state import Intent, Settled, State
from tests.conftest import CliRunner
from tests.emulated import AK_ID, AK_SECRET, running

ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": AK_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": AK_SECRET, "HOME": "/nonexistent"}
CHROMIUM = "/usr/bin/chromium"
# a browser that asks nothing of the network by itself, in a profile of its own
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Opened:
    """What the browser saw: the page's handle, its console errors, page errors and network requests
    other than the file itself (which the page was not allowed to make)."""

    page: Any
    errors: list[str]
    requests: list[str]


@contextmanager
def browser(width: int = 1100) -> Iterator[Any]:
    """A headless chromium (Debian's, never a downloaded one) at ``width`` CSS pixels."""
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.fail(
            "the HTML report is checked in a real browser, and chromium is not installed: "
            "apt-get update && apt-get install -y chromium (Debian's package; .ci/run does it)"
        )
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="snapbatch-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=shutil.which("chromium") or CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def open_page(context: Any, path: Path) -> Opened:
    """Load ``path`` from file://, with every other request blocked and noted."""
    page = context.new_page()
    opened = Opened(page, [], [])
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: opened.errors.append(str(exc)))

    def route(r: Any) -> None:
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            opened.requests.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri(), wait_until="load")
    return opened


def _manifest(tmp_path: Path, n: int) -> Path:
    (tmp_path / "ids.txt").write_text("".join(f"video-{i:05d}\n" for i in range(n)))
    (tmp_path / "more.txt").write_text("".join(f"extra-{i:03d}\n" for i in range(n // 4)))
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nbatch: look\nqps: 30\njobs:\n"
        "  - {name: thumbs, videos: {file: ids.txt}, params: {Count: 1}}\n"
        "  - {name: extras, videos: {file: more.txt}, params: {Count: 2}}\n"
    )
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], dict[str, int]]]:
    """A real batch on the emulator, with unknown videos, throttles, 5xx and failed jobs, polled to the end:
    the manifest, `status --json`, and what the emulator itself counted."""
    from snapbatch.cli.main import main

    tmp_path = tmp_path_factory.mktemp("html")
    path = _manifest(tmp_path, 120)
    known = {f"video-{i:05d}": None for i in range(120) if i % 10} | {f"extra-{i:03d}": None for i in range(30)}
    config = EmulatorConfig(
        qps=1000,
        videos=known,
        faults={"Throttling.User": 0.08, "InternalError": 0.05},
        job_seconds=0.0,
        job_fail_rate=0.2,
        seed=5,
    )
    import io

    def cli(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), env={**ENV, "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    with running(config) as emu:
        code, _, err = cli("run", str(path), "--endpoint", emu.url, "--qps", "400", "--json")
        assert code == 1, err  # the unknown videos failed
        emu.emulator.config.faults = {}  # GetJobDetail answers at once: one pass of poll learns every job's end
        code, _, err = cli("poll", str(path), "--endpoint", emu.url, "--qps", "500", "--until-done")
        assert code == 1, err  # some jobs failed
        calls = [c for c in emu.emulator.calls if c.get("action") == "SubmitSnapshotJob"]
        seen = {
            "accepted": sum(c.get("outcome") == "accepted" for c in calls),
            "throttled": sum(c.get("code") == "Throttling.User" for c in calls),
            "internal": sum(c.get("code") == "InternalError" for c in calls),
        }
    code, out, err = cli("status", str(path), "--json")
    assert code == 0, err
    yield path, json.loads(out), seen


def test_report_html_shows_the_batch_in_a_browser(
    cli: CliRunner, batch: tuple[Path, dict[str, Any], dict[str, int]], tmp_path: Path
) -> None:
    """The page of a real batch opens in chromium without console or page errors and without touching the
    network, and shows the numbers `status --json` and the emulator give: the counts at a glance, calls
    accepted and throttled, failures by code with example videos, and each job's row."""
    path, status, seen = batch
    html = tmp_path / "report.html"
    r = cli("report", str(path), "--html", str(html))
    assert r.code == 0, r.err
    assert r.out == "" and "wrote" in r.err
    counts, done = status["counts"], status["completion"]
    expected = {
        "planned": sum(counts[s] for s in ("pending", "sending", "submitted", "failed", "in_doubt")),
        "submitted": counts["submitted"],
        "completed": done["completed"],
        "failed_at_submit": counts["failed"],
        "failed_after_submit": done["failed"],
        "in_doubt": counts["in_doubt"],
        "pending": counts["pending"],
    }
    assert expected["planned"] == 150 and expected["failed_at_submit"] == 12 and expected["failed_after_submit"] > 0
    with browser() as context:
        opened = open_page(context, html)
        page = opened.page
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        shown = {m: page.inner_text(f'[data-metric="{m}"]') for m, _, _ in GLANCE}
        accepted_note = page.inner_text("#rate .note")
        errors_legend = page.inner_text("#errors .legend")
        codes = {
            row.get_attribute("data-stage") + ":" + row.get_attribute("data-code"): row.inner_text()
            for row in page.query_selector_all("#failures tr[data-code]")
        }
        jobs = {
            row.get_attribute("data-job"): {
                cell.get_attribute("data-col"): cell.inner_text() for cell in row.query_selector_all("td")
            }
            for row in page.query_selector_all("#jobs tr[data-job]")
        }
        assert page.evaluate("document.querySelectorAll('script, link, img, iframe, object').length") == 0
    assert opened.errors == [] and opened.requests == []
    assert shown == {m: f"{n:,}" for m, n in expected.items()}
    assert f"{seen['accepted']:,} calls accepted" in accepted_note
    assert f"throttled: {seen['throttled']:,}" in errors_legend
    assert f"5xx or no connection: {seen['internal']:,}" in errors_legend
    assert "InvalidVideo.NotFound" in codes["submit:InvalidVideo.NotFound"]
    assert "video-00000" in codes["submit:InvalidVideo.NotFound"] and "region" in codes["submit:InvalidVideo.NotFound"]
    assert any(key.startswith("job:") and "--resubmit-failed-jobs" in text for key, text in codes.items())
    assert set(jobs) == {"thumbs", "extras"}
    assert jobs["thumbs"]["planned"] == "120" and jobs["thumbs"]["failed_at_submit"] == "12"
    assert jobs["extras"]["planned"] == "30" and jobs["extras"]["failed_at_submit"] == "0"
    assert sum(int(j["completed"]) for j in jobs.values()) == expected["completed"]
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_html_reads_on_a_phone(
    cli: CliRunner, batch: tuple[Path, dict[str, Any], dict[str, int]], tmp_path: Path
) -> None:
    """At 390 CSS pixels the page has no horizontal scroll of its own (wide tables scroll in their box) and the
    numbers at a glance are all visible."""
    path, _, _ = batch
    html = tmp_path / "report.html"
    assert cli("report", str(path), "--html", str(html)).code == 0
    with browser(width=390) as context:
        opened = open_page(context, html)
        page = opened.page
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        visible = [page.is_visible(f'[data-metric="{m}"]') for m, _, _ in GLANCE]
    assert opened.errors == [] and opened.requests == []
    assert overflow <= 0 and all(visible)


def test_hostile_codes_and_messages_are_shown_as_text(tmp_path: Path) -> None:
    """Error codes and messages recorded from an answer, markup included, are shown as text: the page holds
    no element they could have injected, and the browser shows them verbatim."""
    from snapbatch.models import Request

    state = State(tmp_path / "s.sqlite3")
    try:
        requests = [Request("k0", "job<marquee>", None, "VideoId", "v0", {"VideoId": "v0"})]
        state.ingest(requests, "fp", "b")
        code = '<img src=x onerror="document.title=1">'
        message = "</td></tr></table><script>document.title='owned'</script>&amp;"
        state.apply([Intent("k0"), Settled("k0", Outcome(FAILED, code=code, message=message))])
        page_text = render_html(read_overview(state, "b<u>", 30.0))
    finally:
        state.close()
    html = tmp_path / "hostile.html"
    html.write_text(page_text)
    with browser() as context:
        opened = open_page(context, html)
        page = opened.page
        found = page.evaluate("document.querySelectorAll('script, img, u, marquee').length")
        title = page.title()
        row = page.inner_text("#failures tr[data-code]")
        job = page.inner_text("#jobs tr[data-job] th")
    assert found == 0 and title == "snapbatch report: b<u>"
    assert code in row and message in row and job == "job<marquee>"
    assert opened.errors == [] and opened.requests == []


def test_attempts_are_tallied_by_second_and_kind_with_the_outcomes(tmp_path: Path) -> None:
    """Each settled outcome adds one to its second and kind in attempt_seconds, in the same write; intents
    add nothing."""
    now = [1000.2]
    state = State(tmp_path / "s.sqlite3", clock=lambda: now[0])
    try:
        from snapbatch.models import ACCEPTED, THROTTLED, Request

        state.ingest(
            [Request(f"k{i}", "j", None, "VideoId", f"v{i}", {"VideoId": f"v{i}"}) for i in range(3)], "f", "b"
        )
        state.apply([Intent("k0"), Intent("k1"), Settled("k0", Outcome(THROTTLED, code="Throttling.User"))])
        now[0] = 1000.7
        state.apply([Settled("k1", Outcome(ACCEPTED, job_id="j1")), Settled("k0", Outcome(THROTTLED))])
        now[0] = 1001.1
        state.apply([Settled("k0", Outcome(ACCEPTED, job_id="j0"))])
    finally:
        state.close()
    with sqlite3.connect(tmp_path / "s.sqlite3") as db:
        rows = db.execute("SELECT second, kind, calls FROM attempt_seconds ORDER BY 1, 2").fetchall()
    assert rows == [(1000, "accepted", 1), (1000, "throttled", 2), (1001, "accepted", 1)]


def test_bucket_width_keeps_charts_within_their_bars() -> None:
    """Whatever the span, from a second to a month, a chart has at most MAX_BUCKETS bars of a round width."""
    for span in (1, 59, 600, 601, 3600, 33_334, 9 * 3600 + 16 * 60, 86400 * 31):
        width = bucket_width(span)
        assert -(-span // width) <= MAX_BUCKETS
        assert width == 1 or span / width > MAX_BUCKETS / 2.5  # the next narrower width would not fit


def test_readme_command_makes_the_page_of_the_example_batch(cli: CliRunner, tmp_path: Path) -> None:
    """The README's command runs the example batch on the built-in emulator and writes its page: the 11
    requests planned and submitted, each of the three jobs in its row."""
    from tests.conftest import ROOT

    command = (
        "snapbatch run jobs.example.yaml --emulator && snapbatch report jobs.example.yaml --emulator --html report.html"
    )
    assert command in (ROOT / "README.md").read_text()
    for name in ("jobs.example.yaml", "partner.csv", "catalog"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    manifest = str(tmp_path / "jobs.example.yaml")
    assert cli("run", manifest, "--emulator").code == 0
    r = cli("report", manifest, "--emulator", "--html", str(tmp_path / "report.html"))
    assert r.code == 0, r.err
    page = (tmp_path / "report.html").read_text()
    assert 'data-metric="planned">11<' in page and 'data-metric="submitted">11<' in page
    assert all(f'data-job="{job}"' in page for job in ("homepage", "catalog", "partner-feed"))


def test_html_does_not_go_with_row_filters(
    cli: CliRunner, batch: tuple[Path, dict[str, Any], dict[str, int]], tmp_path: Path
) -> None:
    """--html with --only or --completion is a usage error (exit 2) that writes nothing."""
    path, _, _ = batch
    for flag in (("--only", "failed"), ("--completion", "failed")):
        r = cli("report", str(path), "--html", str(tmp_path / "r.html"), *flag)
        assert r.code == 2 and "--html shows the whole batch" in r.err
    assert not (tmp_path / "r.html").exists()


def test_a_running_batch_shows_its_holder_rate_and_eta(tmp_path: Path) -> None:
    """While a run holds the state, the page names its pid and shows the rate over the last minute and the
    ETA of what is left (here: 1 submitted in the run's first 10 s, 2 left: 20 s)."""
    import os

    from snapbatch.models import ACCEPTED, Request

    state = State(tmp_path / "s.sqlite3", clock=lambda: 2000.0)
    try:
        state.ingest(
            [Request(f"k{i}", "j", None, "VideoId", f"v{i}", {"VideoId": f"v{i}"}) for i in range(3)], "f", "b"
        )
        state.lock(1990.0)
        state.apply([Intent("k0"), Settled("k0", Outcome(ACCEPTED, job_id="j0"))])
        page = render_html(read_overview(state, "b", 30.0, now=2000.0))
    finally:
        state.close()
    assert f"Running: pid {os.getpid()} on" in page and "0.1 submitted/s" in page and "ETA 20 s" in page
    assert 'data-running="yes"' in page


def test_errors_without_a_code_are_named_in_words(tmp_path: Path) -> None:
    """A request whose answer was lost (no Code) is listed as "no answer" among the requests not done yet,
    with what the next run does about it, not as a raw outcome kind."""
    from snapbatch.models import IN_DOUBT, Request

    state = State(tmp_path / "s.sqlite3")
    try:
        state.ingest([Request("k0", "j", None, "VideoId", "v0", {"VideoId": "v0"})], "f", "b")
        state.apply([Intent("k0"), Settled("k0", Outcome(IN_DOUBT, message="read timed out"))])
        page = render_html(read_overview(state, "b", 30.0))
    finally:
        state.close()
    row = page[page.index('<tr data-code="in_doubt" data-stage="open">') :].split("</tr>")[0]
    assert "<td>no answer</td>" in row and "sends these again" in row and "read timed out" in row


def test_requests_in_flight_are_counted_alike_in_every_part_of_the_page(tmp_path: Path) -> None:
    """While a run holds the state, its in-flight ('sending') requests are pending in the cards, the funnel
    and the per-job table alike (not in doubt in one and missing from another); once no run is alive they are
    in doubt in all three."""
    from snapbatch.models import Request

    state = State(tmp_path / "s.sqlite3", clock=lambda: 2000.0)
    try:
        state.ingest(
            [Request(f"k{i}", "j", None, "VideoId", f"v{i}", {"VideoId": f"v{i}"}) for i in range(5)], "f", "b"
        )
        state.lock(1990.0)
        state.apply([Intent("k0"), Intent("k1")])  # two calls in flight, three not sent
        running = read_overview(state, "b", 30.0, now=2000.0)
        state.unlock()
        dead = read_overview(state, "b", 30.0, now=2000.0)
    finally:
        state.close()
    for view, pending, in_doubt in ((running, 5, 0), (dead, 3, 2)):
        page = render_html(view)
        job = view.jobs[0]
        assert (job.pending, job.in_doubt) == (pending, in_doubt)
        assert f'data-metric="pending">{pending}<' in page and f'data-metric="in_doubt">{in_doubt}<' in page
        assert f'data-col="pending" data-label="pending">{pending}<' in page
        assert f'data-col="in_doubt" data-label="in doubt">{in_doubt}<' in page
        shown = sum(view.counts[m] for m in ("submitted", "failed_at_submit", "in_doubt", "pending"))
        assert shown == view.counts["planned"] == 5


def test_buckets_wider_than_a_second_sum_their_seconds_and_keep_the_busiest(tmp_path: Path) -> None:
    """A batch spread over ~50 minutes is drawn in 5 s buckets: each bucket sums the attempts of its seconds
    (the totals on the page are the attempts made) and the line shows its busiest second, not the sum."""
    from snapbatch.models import ACCEPTED, THROTTLED, Request

    now = [0.0]
    state = State(tmp_path / "s.sqlite3", clock=lambda: now[0])
    try:
        state.ingest(
            [Request(f"k{i}", "j", None, "VideoId", f"v{i}", {"VideoId": f"v{i}"}) for i in range(30)], "f", "b"
        )
        for i in range(30):  # each request: throttled at +0 s and +1 s, accepted at +2 s, in one 5 s bucket
            key = f"k{i}"
            for offset, outcome in ((0, Outcome(THROTTLED)), (1, Outcome(THROTTLED)), (2, Outcome(ACCEPTED, "j"))):
                now[0] = 100_000.0 + 100 * i + offset
                state.apply([Intent(key), Settled(key, outcome)])
        view = read_overview(state, "b", 30.0, now=200_000.0)
    finally:
        state.close()
    timeline = view.timeline
    assert timeline is not None and timeline.width_s == 5 and timeline.start == 100_000
    assert sum(timeline.series("throttled")) == 60 and sum(timeline.series("accepted")) == 30
    assert max(timeline.calls["throttled"]) == 2 and max(timeline.peak["throttled"]) == 1
    page = render_html(view)
    assert "30 calls accepted" in page and "throttled: 60" in page and "busiest second" in page


def test_codes_beyond_the_first_twelve_are_summed_as_other_codes(tmp_path: Path) -> None:
    """Fourteen codes at submit: the twelve most common (then by name) get a row with their count, the other
    two requests are counted in one "other codes" row, so the rows add up to the failed at submit."""
    from snapbatch.models import Request

    codes = ["Common"] * 5 + [f"Rare.{c}" for c in "ABCDEFGHIJKLM"]
    state = State(tmp_path / "s.sqlite3")
    try:
        keys = [f"k{i}" for i in range(len(codes))]
        state.ingest([Request(k, "j", None, "VideoId", f"v{k}", {"VideoId": f"v{k}"}) for k in keys], "f", "b")
        state.apply(
            [
                c
                for k, code in zip(keys, codes, strict=True)
                for c in (Intent(k), Settled(k, Outcome(FAILED, code=code)))
            ]
        )
        view = read_overview(state, "b", 30.0)
    finally:
        state.close()
    shown = {g.code: g.count for g in view.failures if g.stage == "submit"}
    assert shown == {"Common": 5} | {f"Rare.{c}": 1 for c in "ABCDEFGHIJK"}
    assert view.other_failures == {"submit": 2} and sum(shown.values()) + 2 == view.counts["failed_at_submit"]
    page = render_html(view)
    assert page.count('data-stage="submit"') == 12 and "<td>other codes</td><td class=n>2</td>" in page


def test_search_jobs_not_listed_yet_are_named_instead_of_silently_left_out(tmp_path: Path) -> None:
    """A search job whose listing was cut short (a stopped slice), or not begun, has no requests yet: the page
    says so, with what was listed, rather than a batch that looks done without it; a finished list says
    nothing."""
    from snapbatch.models import Request

    path = tmp_path / "s.sqlite3"
    State(path).close()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO listings (job, match, sort_by, listed, total, started_at, finished_at) VALUES (?, ?, ?, ?, ?, "
            "1.0, ?)",
            [("cut", "Status = 'Normal'", "CreationTime:Asc", 1500, 20000, None), ("done", "x", "y", 3, 3, 2.0)],
        )
    state = State(path)
    try:
        state.ingest([Request("k0", "files", None, "VideoId", "v0", {"VideoId": "v0"})], "f", "b")
        page = render_html(read_overview(state, "b", 30.0, search_jobs=["cut", "done", "later"]))
    finally:
        state.close()
    assert "Search job cut is not listed yet (1,500 videos listed so far of about 20,000)" in page
    assert "Search job later is not listed yet (0 videos listed so far)" in page
    assert "Search job done" not in page
