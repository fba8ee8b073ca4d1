"""The command-line side of run, status and report: wiring, progress lines, summaries, exit codes."""

from __future__ import annotations

import argparse
import csv
import json
import math
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio
from anyio.from_thread import start_blocking_portal

from snapbatch.completion.events import EventStore, absorb, default_events_path
from snapbatch.emulator import Emulator, EmulatorConfig
from snapbatch.emulator.catalogue import Catalogue, load_catalogue
from snapbatch.errors import Problem, SnapbatchError, StateError, UsageError, printable
from snapbatch.manifest.expand import Listings, expand, fingerprint, search_jobs
from snapbatch.manifest.load import load_manifest
from snapbatch.models import Manifest
from snapbatch.report import (
    COMPLETION_WORDS,
    REPORT_FIELDS,
    listing_document,
    listing_line,
    progress_line,
    report_row,
    run_summary,
    status_document,
    status_text,
    summary_line,
)
from snapbatch.run.limiter import DEFAULT_MARGIN_S, Limiter, RateWindow
from snapbatch.run.listings import (
    SEARCH_QPS,
    ListingError,
    ListingInfo,
    ListingStore,
    freeze_all,
    frozen_listings,
    list_videos,
    listing_mark,
)
from snapbatch.run.margin import MarginStore, cache_dir
from snapbatch.run.quota import Pacing, describe, open_limiter, resolve_quota
from snapbatch.run.runner import RunOptions, RunResult, run_batch
from snapbatch.run.state import State, default_state_path
from snapbatch.vod.chain import find_provider
from snapbatch.vod.client import VodClient
from snapbatch.vod.endpoint import resolve_endpoint, resolve_region
from snapbatch.vod.providers import CredentialsProvider, StaticCredentials
from snapbatch.vod.signing import Credentials

__all__ = [
    "EXIT",
    "Out",
    "absorb_events",
    "events_path",
    "open_state",
    "plan_listings",
    "report_command",
    "resolve_target",
    "run_command",
    "status_command",
]

EXIT = {"ok": 0, "failed": 1, "usage": 2, "locked": 3, "fatal": 4, "stopped": 5, "state": 6, "interrupted": 130}


_STOPS = {
    "max-requests": "--max-requests reached",
    "max-duration": "--max-duration reached",
    "retry-budget": "the run's retry budget is spent (the service keeps failing or throttling)",
    "outage": "the service looks down (many answers in a row were 5xx or lost)",
    "unreachable": "the endpoint never answered (the first calls could not connect or got no answer): check the "
    "endpoint URL, the network and any proxy or TLS interception",
    "wrong-endpoint": "what answered is not VOD's API: check the endpoint URL (or region) and any proxy in between",
    "interrupted": "interrupted",
    "quota": "the shared quota could not be reached",
}


_COMPLETION_FILTER = {"completed": "success", "failed": "fail", "processing": "processing", "unknown": None}


class Out:
    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr

    def problems(self, problems: Sequence[Problem]) -> None:
        for p in problems:
            print(p.format(), file=self.stderr)

    def log(self, message: str) -> None:
        # escaped: a log line may quote a server's message or a manifest's text
        print(f"snapbatch: {printable(message)}", file=self.stderr, flush=True)


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


@contextmanager
def _emulated(qps: float, catalogue: Catalogue | None = None) -> Iterator[tuple[str, Credentials]]:
    """A throwaway emulator on a free loopback port, in its own thread."""
    creds = Credentials("emulator-" + secrets.token_hex(4), secrets.token_urlsafe(24), None, "the built-in emulator")
    config = EmulatorConfig(
        credentials={creds.access_key_id: (creds.access_key_secret, None)}, qps=qps, query_only=True
    )
    config.catalogue = catalogue
    emulator = Emulator(config)
    with start_blocking_portal() as portal:
        future, port = portal.start_task(emulator.serve)
        try:
            yield f"http://127.0.0.1:{port}", creds
        finally:
            future.cancel()


def run_command(args: argparse.Namespace, env: Mapping[str, str], out: Out) -> int:
    manifest = load_manifest(args.manifest, env)
    out.problems(manifest.warnings)
    qps = args.qps or manifest.qps
    concurrency = args.concurrency or min(256, max(4, math.ceil(qps * 2.5) + 2))
    quota = resolve_quota(args.quota, env.get("SNAPBATCH_QUOTA"), manifest.quota)
    if args.emulator:  # a throwaway emulator and key: nothing to share with, nothing worth learning
        catalogue = _catalogue(args, manifest, out)
        with _emulated(30.0, catalogue) as (endpoint, creds):
            return _run(args, manifest, endpoint, StaticCredentials(creds), qps, concurrency, out, pacing=Pacing("off"))
    endpoint = resolve_target(args, manifest, env)
    provider = find_provider(env, Path(env.get("HOME", str(Path.home()))), args.profile, log=out.log)
    pacing = Pacing(quota, cache_dir(env), args.quota_wait)
    return _run(args, manifest, endpoint, provider, qps, concurrency, out, pacing)


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


def _account_key(creds: CredentialsProvider) -> str:
    """Who owns the quota, across runs: the AccessKeyId, or for STS credentials (whose key id changes with
    every renewal) the source they come from (a role, a profile)."""
    current = creds.current()
    return current.access_key_id if current.security_token is None else f"sts:{creds.source}"


def _run(
    args: argparse.Namespace,
    manifest: Manifest,
    endpoint: str,
    creds: CredentialsProvider,
    qps: float,
    concurrency: int,
    out: Out,
    pacing: Pacing | None = None,
) -> int:
    state = State(_state_path(args, manifest))
    pacing = pacing or Pacing("off")
    try:
        state.lock(time.time())
        state.check_batch(manifest.batch)
        recovered = state.recover()
        if recovered:
            out.log(
                f"{recovered} requests were in flight when the last run stopped; they are in doubt and "
                + ("will be sent again" if args.in_doubt == "resend" else "are left alone (--in-doubt skip)")
            )
        # an event naming a request in doubt proves its job exists: it must not be sent again
        resolved = absorb_events(args, manifest, state)
        if resolved:
            out.log(f"{resolved} requests updated from the receiver's events")
        if getattr(args, "resubmit_failed_jobs", False):
            reopened = state.reopen_failed_jobs()
            out.log(f"{reopened} requests whose job failed after submission will be sent again")
        out.log(
            f"batch {manifest.batch}: sending to {endpoint} as {creds.current().access_key_id} ({creds.source}), "
            f"at most {qps:g} calls/s, {concurrency} in flight"
        )
        options = RunOptions(
            concurrency=concurrency,
            in_doubt=args.in_doubt,
            retry_failed=args.retry_failed,
            max_requests=args.max_requests,
            max_duration_s=args.max_duration,
        )
        # The state writer and the ingest run in threads; a shorter GIL switch interval keeps them from
        # delaying a due call by up to the default 5 ms, which would eat into the limiter's margin.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)
        try:
            result = anyio.run(
                partial(
                    _run_async,
                    state,
                    manifest,
                    endpoint,
                    creds,
                    qps,
                    options,
                    out,
                    args.progress_every,
                    pacing,
                    search=(getattr(args, "relist", False), getattr(args, "search_qps", None) or SEARCH_QPS),
                )
            )
        except BaseExceptionGroup as group:  # a StateError from the writer or the ingest, say
            raise _first_snapbatch_error(group) from None
        finally:
            sys.setswitchinterval(switch)
        state.recover()  # anything cut off by an interrupt is in doubt, not "sending"
        after = state.counts()
    finally:
        state.close()
    summary = run_summary(manifest.batch, after, result)
    if result.fatal is not None and result.fatal.http_status is None:  # decided here: nothing was sent
        out.log(f"stopped: {result.fatal.message}")
    elif result.fatal is not None:
        out.log(f"stopped: the service answered {result.fatal.code}: {result.fatal.message}")
    elif result.stop_reason:
        last = result.last_error
        detail = ""
        if last is not None and result.stop_reason in ("outage", "unreachable", "retry-budget", "wrong-endpoint"):
            detail = f" (last error: {last.code + ': ' if last.code else ''}{last.message})"
        if result.quota_error:
            detail = f" ({result.quota_error}; nothing was sent meanwhile)"
        out.log(
            f"stopped: {_STOPS.get(result.stop_reason, result.stop_reason)}{detail}; the state is saved, run again "
            "to continue"
        )
    if result.gave_up:
        out.log(
            f"{result.gave_up} requests got no definite answer in {options.max_attempts} attempts; they stay "
            "pending or in doubt, with their last error in `snapbatch report`; run again to retry them"
        )
    out.log(summary_line(summary))
    if args.json:
        print(json.dumps(summary), file=out.stdout)
    code = _exit_code(result, after)
    names = {job.name for job in search_jobs(manifest)}
    unfinished = [i.job for i in ListingStore.read(state.path) if not i.complete and i.job in names] if names else []
    if unfinished and code == EXIT["ok"]:  # stopped while listing: nothing pending yet, but work is left
        out.log(f"the listing of search jobs {', '.join(unfinished)} is unfinished; run again to continue it")
        code = EXIT["interrupted"] if result.stop_reason == "interrupted" else EXIT["stopped"]
    return code


def _first_snapbatch_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_snapbatch_error(exc)
        if isinstance(exc, SnapbatchError):
            return exc
    return group


async def _run_async(
    state: State,
    manifest: Manifest,
    endpoint: str,
    creds: CredentialsProvider,
    qps: float,
    options: RunOptions,
    out: Out,
    progress_every: float | None,
    pacing: Pacing,
    search: tuple[bool, float] = (False, SEARCH_QPS),
) -> RunResult:
    stop = anyio.Event()
    margins = MarginStore(pacing.cache, endpoint, _account_key(creds)) if pacing.cache is not None else None
    learned = margins.load() if margins is not None else None
    if learned is not None and learned > DEFAULT_MARGIN_S:
        out.log(f"starting with the {learned * 1000:.0f} ms margin the last run on this key learned from throttles")
    window = RateWindow(qps, learned_s=learned, now=time.monotonic())
    paused: list[str] = []  # why the shared quota cannot be reached, while it cannot
    paused_at = [0.0]

    def on_store(problem: str | None) -> None:
        if problem is not None:
            paused[:] = [problem]
            paused_at[0] = time.monotonic()
            out.log(
                f"the shared quota cannot be reached ({problem}); sending nothing until it can, retrying, for at "
                f"most {pacing.outage_s:g} s"
            )
        else:
            paused.clear()
            out.log(f"the shared quota is back after {time.monotonic() - paused_at[0]:.1f} s; sending again")

    tty = out.stderr.isatty()
    ingested = anyio.Event()
    events = {"submitted": 0, "throttled": 0, "failed": 0, "errors": 0}
    last_error: list[str] = []  # the latest 5xx or lost answer's code, for the progress line
    started = time.monotonic()

    abandon = threading.Event()

    listing: list[ListingInfo] = []  # the page last committed, while a search job is being listed

    async def ingest() -> None:
        listings, mark = await _freeze(state, manifest, client, search, out, listing)
        listing.clear()
        fp = await anyio.to_thread.run_sync(fingerprint, manifest) + mark
        if state.needs_ingest(fp):
            total, new = await anyio.to_thread.run_sync(
                state.ingest, expand(manifest, fold_duplicates=False, listings=listings), fp, manifest.batch, abandon
            )
            if not abandon.is_set():
                out.log(f"{total} requests in the manifest, {new} new to the state file")
        ingested.set()

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if data["kind"] == "accepted":
            events["submitted"] += 1
        elif data["kind"] in ("throttled", "failed"):
            events[data["kind"]] += 1
        elif data["kind"] in ("transient", "in_doubt"):
            events["errors"] += 1
            last_error[:] = [data["code"] or ("no answer" if data["kind"] == "in_doubt" else "no connection")]

    async def progress() -> None:
        every = progress_every or (1.0 if tty else 10.0)
        while True:
            await anyio.sleep(every)
            counts = await anyio.to_thread.run_sync(state.counts)
            line = (
                listing_line(listing[-1], ongoing=True)
                if listing
                else progress_line(
                    counts,
                    events,
                    time.monotonic() - started,
                    options.in_doubt == "resend",
                    ingesting=not ingested.is_set(),
                    last_error=last_error[0] if last_error else None,
                )
            )
            if paused:
                line += " | paused: waiting for the shared quota"
            if tty:
                print(f"\r{line}\x1b[K", end="", file=out.stderr, flush=True)
            else:
                out.log(line)

    hard_stop = anyio.Event()

    async def signals() -> None:
        # The receiver stays open for the whole run: a second signal must stop at once, not raise
        # KeyboardInterrupt through whatever happens to be running.
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for signum in received:
                name = signal.Signals(signum).name
                if not stop.is_set():
                    out.log(
                        f"{name}: starting no new calls, waiting up to {options.drain_s:g} s for those in flight "
                        "(again to stop at once)"
                    )
                    stop.set()
                else:
                    out.log(f"second {name}: stopping at once; the calls in flight are recorded as in doubt")
                    hard_stop.set()

    if pacing.quota == "local" and pacing.cache is not None:
        out.log("pacing shared with the other runs on this host that use this AccessKeyId and endpoint")
    elif pacing.quota not in ("local", "off"):
        out.log(f"pacing shared through {describe(pacing.quota)} with every run on this AccessKeyId and endpoint")
    on_throttled = margins.save if margins is not None else None
    async with (
        open_limiter(
            pacing, window, endpoint, _account_key(creds), on_throttled=on_throttled, on_store=on_store, log=out.log
        ) as limiter,
        VodClient(endpoint, creds, max_connections=options.concurrency) as client,
        anyio.create_task_group() as tg,
    ):
        if threading.current_thread() is threading.main_thread():
            tg.start_soon(signals)
        tg.start_soon(progress)
        tg.start_soon(ingest)
        tg.start_soon(creds.keep_fresh)  # renews STS credentials ahead of expiry, off the calls' path
        result = await run_batch(
            state,
            client,
            limiter,
            options,
            on_event=on_event,
            stop=stop,
            hard_stop=hard_stop,
            more_coming=lambda: not ingested.is_set(),
        )
        abandon.set()  # an unfinished ingest commits as it goes and is redone next time
        if margins is not None:
            margins.save(limiter.window.margin(time.monotonic()))
        tg.cancel_scope.cancel()
    if tty:
        print(file=out.stderr)
    return result


async def _freeze(
    state: State,
    manifest: Manifest,
    client: VodClient,
    search: tuple[bool, float],
    out: Out,
    listing: list[ListingInfo],
) -> tuple[Listings, str]:
    """List the manifest's search jobs into the state (or find them frozen there), at SearchMedia's own rate."""
    jobs = [(job.name, job.ids.search) for job in search_jobs(manifest) if job.ids.search is not None]
    if not jobs:
        return {}, ""
    relist, search_qps = search
    store = ListingStore(state.path)

    def on_done(info: ListingInfo, fresh: bool) -> None:
        out.log(listing_line(info, fresh=fresh))

    try:
        return await freeze_all(
            store,
            jobs,
            client,
            Limiter(RateWindow(search_qps)),
            relist=relist,
            on_page=lambda info: listing.append(info) if not listing else listing.__setitem__(-1, info),
            on_done=on_done,
        )
    finally:
        store.close()


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
    if found:
        listings.update(ListingStore(state_path).listings(list(found)))
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
    if result.stop_reason == "interrupted":
        return EXIT["interrupted"]
    if result.stop_reason == "fatal":
        return EXIT["fatal"]
    if result.stop_reason is not None and (after["pending"] or after["in_doubt"]):
        return EXIT["stopped"]
    if after["failed"] or after["in_doubt"] or after["pending"]:
        return EXIT["failed"]
    return EXIT["ok"]


def open_state(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Manifest, State]:
    """The batch's state file, refused (exit 6) when it is missing, not a state file, or another batch's:
    its counts and rows are not this manifest's."""
    manifest = load_manifest(args.manifest, env, check_ids=False)
    path = _state_path(args, manifest)
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
    manifest, state = open_state(args, env)
    try:
        absorb_events(args, manifest, state)
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
