"""The run, status and report commands: wiring the run's parts from the command line, printing its
events and summaries (in report.py's words), and its exit code."""

from __future__ import annotations

import argparse
import csv
import json
import math
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from snapbatch.cli.output import EXIT, Out
from snapbatch.completion.events import EventStore, absorb, default_events_path
from snapbatch.emulator import Emulator, EmulatorConfig, running_emulator
from snapbatch.emulator.catalogue import Catalogue, load_catalogue
from snapbatch.errors import SnapbatchError, StateError, UsageError
from snapbatch.files import write_atomically
from snapbatch.htmlreport import render_html
from snapbatch.manifest.expand import Listings, expand, fingerprint, search_jobs
from snapbatch.manifest.load import load_manifest
from snapbatch.metrics import MetricsFile
from snapbatch.models import Manifest, Outcome
from snapbatch.report import (
    COMPLETION_WORDS,
    REPORT_FIELDS,
    absorbed_line,
    html_written_line,
    ingested_line,
    listing_document,
    listing_line,
    margin_line,
    progress_line,
    quota_back_line,
    quota_paused_line,
    quota_shared_line,
    recovered_line,
    reopened_line,
    report_row,
    run_summary,
    second_signal_line,
    signal_line,
    start_line,
    status_document,
    status_text,
    stop_lines,
    summary_line,
    unfinished_listings_line,
)
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.listings import (
    SEARCH_QPS,
    ListingError,
    ListingInfo,
    ListingStore,
    frozen_listings,
    list_videos,
    listing_mark,
)
from snapbatch.run.margin import cache_dir
from snapbatch.run.overview import read_overview
from snapbatch.run.quota import Pacing, resolve_quota
from snapbatch.run.runner import RunOptions, RunResult, StopReason
from snapbatch.run.session import Progress, RunEvents, run_manifest
from snapbatch.run.state import State, default_state_path
from snapbatch.vod.chain import find_provider
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.endpoint import resolve_endpoint, resolve_region
from snapbatch.vod.providers import CredentialsProvider, StaticCredentials

__all__ = [
    "absorb_events",
    "events_path",
    "open_state",
    "plan_listings",
    "report_command",
    "resolve_target",
    "run_command",
    "status_command",
]


_COMPLETION_FILTER = {"completed": "success", "failed": "fail", "processing": "processing", "unknown": None}


def _state_path(args: argparse.Namespace, manifest: Manifest) -> Path:
    if args.state:
        return Path(args.state)
    # A rehearsal on the emulator must never make the real run believe its requests were submitted.
    batch = manifest.batch + (".emulator" if getattr(args, "emulator", False) else "")
    return default_state_path(manifest.path, batch)


def events_path(args: argparse.Namespace, manifest: Manifest) -> Path:
    """The receiver's event store: --events, else .snapbatch/events.sqlite3 beside the manifest."""
    given = getattr(args, "events", None)
    return Path(given) if given else default_events_path(manifest.path.parent)


def absorb_events(args: argparse.Namespace, manifest: Manifest, state: State) -> int:
    """Bring the receiver's events into the batch's state, when there is an event store; how many changed."""
    path = events_path(args, manifest)
    if not path.exists():
        if getattr(args, "events", None):
            raise UsageError(f"no event store at {path}: check --events (the file `snapbatch receive` writes)")
        return 0
    store = EventStore(path, create=False)
    try:
        return absorb(state, store)
    finally:
        store.close()


def run_command(args: argparse.Namespace, env: Mapping[str, str], out: Out, metrics: MetricsFile | None = None) -> int:
    manifest = load_manifest(args.manifest, env)
    out.problems(manifest.warnings)
    if metrics is not None:
        metrics.for_batch(manifest.batch, _state_path(args, manifest), args.qps or manifest.qps)
    quota = resolve_quota(args.quota, env.get("SNAPBATCH_QUOTA"), manifest.quota)
    if args.emulator:  # a throwaway emulator and key: nothing to share with, nothing worth learning
        creds = Credentials(
            "emulator-" + secrets.token_hex(4), secrets.token_urlsafe(24), None, "the built-in emulator"
        )
        config = EmulatorConfig(
            credentials={creds.access_key_id: (creds.access_key_secret, None)},
            qps=30.0,
            query_only=True,
            catalogue=_catalogue(args, manifest, out),
        )
        with running_emulator(Emulator(config)) as served:
            return _run(args, manifest, served.url, StaticCredentials(creds), out, Pacing("off"), metrics)
    endpoint = resolve_target(args, manifest, env)
    provider = find_provider(env, Path(env.get("HOME", str(Path.home()))), args.profile, log=out.log)
    return _run(args, manifest, endpoint, provider, out, Pacing(quota, cache_dir(env), args.quota_wait), metrics)


def _catalogue(args: argparse.Namespace, manifest: Manifest, out: Out) -> Catalogue | None:
    """The built-in emulator's catalogue for search jobs (`run --emulator --catalogue FILE`)."""
    path = getattr(args, "catalogue", None)
    if path is None:
        if search_jobs(manifest):
            out.log("the built-in emulator has no catalogue, so search jobs find no videos; give --catalogue FILE")
        return None
    try:
        return load_catalogue(path)
    except OSError as exc:
        raise UsageError(f"cannot read --catalogue {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"--catalogue: {exc}") from None


def resolve_target(args: argparse.Namespace, manifest: Manifest, env: Mapping[str, str]) -> str:
    """The endpoint URL: --endpoint, the manifest's, or the region's (--region, manifest, environment)."""
    region = resolve_region(args.region, manifest.region, env.get("ALIBABA_CLOUD_REGION_ID"))
    return resolve_endpoint(args.endpoint, manifest.endpoint, region)


class _Printer(RunEvents):
    """The run's events as log lines on stderr; on a terminal, progress is one line rewritten in place. With a
    metrics file, the answers are counted for it and it is written on the progress tick."""

    def __init__(self, out: Out, start: str, resend_in_doubt: bool, metrics: MetricsFile | None = None) -> None:
        self.out, self.start, self.resend_in_doubt, self.metrics = out, start, resend_in_doubt, metrics
        self.tty = out.stderr.isatty()
        self.live = False  # a progress line without its newline is on the terminal

    def started(self, recovered: int) -> None:
        if recovered:
            self.out.log(recovered_line(recovered, self.resend_in_doubt))
        self.out.log(self.start)

    def pacing(self, quota: str, margin_s: float | None) -> None:
        if margin_s is not None:
            self.log(margin_line(margin_s))
        if quota != "off":
            self.log(quota_shared_line(quota))

    def quota_paused(self, problem: str, outage_s: float) -> None:
        self.log(quota_paused_line(problem, outage_s))

    def quota_back(self, after_s: float) -> None:
        self.log(quota_back_line(after_s))

    def listed(self, info: ListingInfo, fresh: bool) -> None:
        self.log(listing_line(info, fresh=fresh))

    def ingested(self, total: int, new: int) -> None:
        self.log(ingested_line(total, new))

    def progress(self, progress: Progress) -> None:
        if self.tty:
            print(f"\r{progress_line(progress)}\x1b[K", end="", file=self.out.stderr, flush=True)
            self.live = True
        else:
            self.out.log(progress_line(progress))

    def outcome(self, key: str, outcome: Outcome) -> None:
        if self.metrics is not None:
            self.metrics.record(outcome)

    def checkpoint(self, progress: Progress) -> None:
        if self.metrics is not None:
            self.metrics.progress(progress)

    def stopping(self, signal_name: str, drain_s: float) -> None:
        self.log(signal_line(signal_name, drain_s))

    def abandoning(self, signal_name: str) -> None:
        self.log(second_signal_line(signal_name))

    def log(self, message: str) -> None:
        self.end_line()
        self.out.log(message)

    def end_line(self) -> None:
        if self.live:
            print(file=self.out.stderr)
            self.live = False


def _run(
    args: argparse.Namespace,
    manifest: Manifest,
    endpoint: str,
    creds: CredentialsProvider,
    out: Out,
    pacing: Pacing,
    metrics: MetricsFile | None = None,
) -> int:
    qps = args.qps or manifest.qps
    options = RunOptions(
        concurrency=args.concurrency or min(256, max(4, math.ceil(qps * 2.5) + 2)),
        in_doubt=args.in_doubt,
        retry_failed=args.retry_failed,
        max_requests=args.max_requests,
        max_duration_s=args.max_duration,
    )
    start = start_line(manifest.batch, endpoint, creds.current().access_key_id, creds.source, qps, options.concurrency)
    printer = _Printer(out, start, args.in_doubt == "resend", metrics)
    try:
        finished = run_manifest(
            manifest,
            _state_path(args, manifest),
            endpoint,
            creds,
            qps=qps,
            options=options,
            events=printer,
            progress_every_s=args.progress_every or (1.0 if printer.tty else 10.0),
            pacing=pacing,
            relist=getattr(args, "relist", False),
            search_qps=getattr(args, "search_qps", None) or SEARCH_QPS,
            prepare=lambda state: _prepare(args, manifest, state, out, metrics),
        )
    finally:
        printer.end_line()
    result, after = finished.result, finished.counts
    if metrics is not None:  # the runner's own count: the progress tick's may be up to a tick old
        metrics.retries = result.retries
    summary = run_summary(manifest.batch, after, result)
    for line in stop_lines(result, options.max_attempts):
        out.log(line)
    out.log(summary_line(summary))
    if args.json:
        print(json.dumps(summary), file=out.stdout)
    code = _exit_code(result, after)
    if finished.unfinished_listings and code == EXIT["ok"]:  # stopped while listing: nothing pending, work left
        out.log(unfinished_listings_line(finished.unfinished_listings))
        code = EXIT["interrupted"] if result.stop_reason == StopReason.INTERRUPTED else EXIT["stopped"]
    if metrics is not None and code == EXIT["stopped"]:
        metrics.stopped(result.stop_reason.value if result.stop_reason is not None else "stopped")
    return code


def _prepare(args: argparse.Namespace, manifest: Manifest, state: State, out: Out, metrics: MetricsFile | None) -> None:
    # an event naming a request in doubt proves its job exists: it must not be sent again
    resolved = absorb_events(args, manifest, state)
    if resolved:
        out.log(absorbed_line(resolved))
    if getattr(args, "resubmit_failed_jobs", False):
        out.log(reopened_line(state.reopen_failed_jobs()))
    if metrics is not None:  # the counts this run starts from, before anything is sent
        metrics.started(state)


@contextmanager
def plan_listings(args: argparse.Namespace, manifest: Manifest, env: Mapping[str, str], out: Out) -> Iterator[Listings]:
    """The search jobs' lists for `plan`: the batch's frozen ones where it has them, else listed now through
    SearchMedia into a scratch file (needs credentials and the network). A job that cannot be listed is named
    and left out; the rest of the plan stands."""
    jobs = [(job.name, job.ids.search) for job in search_jobs(manifest) if job.ids.search is not None]
    found: dict[str, Any] = {}
    state_path = _state_path(args, manifest)
    frozen = {info.job: info for info in ListingStore.read(state_path)} if state_path.exists() else {}
    todo = []
    for name, search in jobs:
        info = frozen.get(name)
        if info is not None and info.complete and (info.match, info.sort_by) == (search.match, search.sort_by):
            out.log(listing_line(info))
            found[name] = info
        else:
            todo.append((name, search))
    listings: dict[str, Any] = {}
    if found:  # read only: plan never creates, migrates or writes the batch's state file
        listings.update(frozen_listings(state_path, list(found)))
    if not todo:
        yield listings
        return
    names = ", ".join(name for name, _ in todo)
    if getattr(args, "offline", False) or getattr(args, "emulator", False):
        why = "--offline" if getattr(args, "offline", False) else "no `run --emulator` has listed them yet"
        out.log(f"{why}: search jobs {names} are not listed, so their requests are not shown")
        yield listings
        return
    with tempfile.TemporaryDirectory(prefix="snapbatch-plan-") as scratch:
        try:
            endpoint = resolve_target(args, manifest, env)
            provider = find_provider(env, Path(env.get("HOME", str(Path.home()))), None, log=out.log)
        except SnapbatchError as exc:
            out.log(f"cannot list search jobs {names} (listing needs credentials): {exc}; their requests are not shown")
            yield listings
            return
        store = ListingStore(Path(scratch) / "plan.sqlite3")
        out.log(f"listing search jobs {names} through SearchMedia at {endpoint} as {provider.source} (not frozen)")

        async def list_all() -> None:
            limiter = Limiter(RateWindow(SEARCH_QPS))
            async with VodClient(endpoint, provider) as client:
                for name, search in todo:
                    try:
                        info = await list_videos(store, name, search, client, limiter)
                    except ListingError as exc:
                        out.log(f"cannot list search job {name}: {exc}; its requests are not shown")
                        continue
                    out.log(f"job {name}: {info.listed} videos match now (listed for this plan only)")
                    listings.update(store.listings([name]))

        try:
            anyio.run(list_all)
        finally:
            store.close()
        yield listings


def _exit_code(result: RunResult, after: dict[str, int]) -> int:
    if result.stop_reason == StopReason.INTERRUPTED:
        return EXIT["interrupted"]
    if result.stop_reason == StopReason.FATAL:
        return EXIT["fatal"]
    if result.stop_reason is not None and (after["pending"] or after["in_doubt"]):
        return EXIT["stopped"]
    if after["failed"] or after["in_doubt"] or after["pending"]:
        return EXIT["failed"]
    return EXIT["ok"]


def open_state(
    args: argparse.Namespace, env: Mapping[str, str], metrics: MetricsFile | None = None
) -> tuple[Manifest, State]:
    """The batch's state file, refused (exit 6) when it is missing, not a state file, or another batch's:
    its counts and rows are not this manifest's. ``metrics`` learns the batch as soon as the manifest is read."""
    manifest = load_manifest(args.manifest, env, check_ids=False)
    path = _state_path(args, manifest)
    if metrics is not None:
        metrics.for_batch(manifest.batch, path, args.qps)
    if not path.exists():
        raise StateError(
            f"no state file at {path}: nothing has been run for this batch yet (or give --state, "
            "or --emulator for the state of emulator runs)"
        )
    state = State(path, create=False)
    try:
        state.check_batch(manifest.batch)
    except StateError:
        state.close()
        raise
    return manifest, state


def status_command(args: argparse.Namespace, env: Mapping[str, str], out: Out) -> int:
    manifest, state = open_state(args, env)
    try:
        absorb_events(args, manifest, state)
        completion = state.completion_counts()
        holder = state.holder()
        # the search jobs' frozen lists count as the run counted them (same fingerprint, same requests)
        frozen = {info.job: info for info in ListingStore.read(state.path) if info.complete}
        searched = [job.name for job in search_jobs(manifest) if job.name in frozen]
        mark = listing_mark([frozen[name] for name in searched])
        changed = state.needs_ingest(fingerprint(manifest) + mark)
        # a changed manifest: counted as the next run will see it, with what it adds and drops
        listings = frozen_listings(state.path, searched)
        counts = (
            state.compare(r.key for r in expand(manifest, fold_duplicates=False, listings=listings))
            if changed
            else state.counts()
        )
        if holder is None:  # no run is alive: what a dead run left 'sending' is in doubt now, not later
            counts["in_doubt"] += counts["sending"]
            counts["sending"] = 0
        now = time.time()
        # the rate over the last minute, or since the running batch started if that is more recent
        window = max(1.0, min(60.0, now - float(holder.get("started", 0)))) if holder else 60.0
        recent = state.submitted_since(now - window)
        errors = state.recent_errors(now - 3600)
    finally:
        state.close()
    doc = status_document(manifest.batch, counts, holder, recent / window, window, errors, completion)
    doc["listings"] = [listing_document(info) for info in ListingStore.read(state.path)]
    if args.json:
        print(json.dumps(doc), file=out.stdout)
    else:
        out.stdout.write(status_text(doc))
    return EXIT["ok"]


def report_command(args: argparse.Namespace, env: Mapping[str, str], out: Out) -> int:
    if getattr(args, "html", None) is not None and (args.only or getattr(args, "completion", None)):
        raise UsageError("--html shows the whole batch: leave out --only and --completion (they filter rows)")
    manifest, state = open_state(args, env)
    try:
        absorb_events(args, manifest, state)
        if getattr(args, "html", None) is not None:
            searched = [job.name for job in search_jobs(manifest)]
            view = read_overview(state, manifest.batch, manifest.qps, search_jobs=searched)
            _write_page(Path(args.html), render_html(view))
            out.log(html_written_line(args.html, view.counts["planned"]))
            return EXIT["ok"]
        # no run alive: a dead run's 'sending' rows are in doubt, and listed so at once
        dead = state.holder() is None
        rows = (report_row(row) for row in state.rows((args.only,) if args.only else None, sending_in_doubt=dead))
        wanted = getattr(args, "completion", None)
        if wanted:
            rows = (values for values in rows if values["completion"] == COMPLETION_WORDS[_COMPLETION_FILTER[wanted]])
        if args.format == "csv":
            writer = csv.writer(out.stdout, lineterminator="\n")
            writer.writerow(REPORT_FIELDS)
            for values in rows:
                writer.writerow(["" if values[f] is None else values[f] for f in REPORT_FIELDS])
        else:
            for values in rows:
                out.stdout.write(json.dumps(values, ensure_ascii=False) + "\n")
    finally:
        state.close()
    return EXIT["ok"]


def _write_page(path: Path, text: str) -> None:
    """``path`` holds the old page or the new one, never half of one (a mail job may pick it up any time)."""
    try:
        write_atomically(path, text)
    except OSError as exc:
        raise UsageError(
            f"cannot write --html {path}: {exc.strerror or exc}; check the directory and free disk space"
        ) from None
