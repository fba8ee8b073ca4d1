"""The command-line side of receive and poll."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import anyio

from snapbatch.cli.output import EXIT, Out
from snapbatch.cli.run import absorb_events, events_path, open_state, resolve_target
from snapbatch.completion.events import EventStore, default_events_path
from snapbatch.completion.poller import PollOptions, PollResult, poll_jobs
from snapbatch.completion.receiver import Receiver, ReceiverConfig
from snapbatch.errors import UsageError
from snapbatch.metrics import EVERY_S, MetricsFile
from snapbatch.models import Manifest
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.session import kept_signal_handlers
from snapbatch.run.state import State
from snapbatch.vod.chain import find_provider
from snapbatch.vod.client import VodClient
from snapbatch.vod.providers import CredentialsProvider

__all__ = ["AUTH_KEY_VARIABLE", "poll_command", "receive_command"]

AUTH_KEY_VARIABLE = "SNAPBATCH_CALLBACK_AUTH_KEY"


def _auth_keys(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, ...]:
    text = env.get(AUTH_KEY_VARIABLE, "")
    if args.auth_key_file:
        try:
            text = Path(args.auth_key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read --auth-key-file {args.auth_key_file}: {exc.strerror or exc}") from None
    keys = tuple(k.strip() for k in text.replace(",", "\n").splitlines() if k.strip())
    if len(keys) > 2:
        raise UsageError("give at most two auth keys (the current one and the one replacing it)")
    if keys and not args.public_url:
        raise UsageError(
            "an auth key needs --public-url: the callback URL exactly as configured in VOD, which the signature covers"
        )
    return keys


def receive_command(args: argparse.Namespace, env: Mapping[str, str], out: Out) -> int:
    keys = _auth_keys(args, env)
    path = Path(args.events) if args.events else default_events_path(Path.cwd())
    store = EventStore(path)
    receiver = Receiver(
        store, ReceiverConfig(public_url=args.public_url, auth_keys=keys, max_age_s=args.max_age), log=out.log
    )
    if not keys and (args.public_url or args.host not in ("127.0.0.1", "::1", "localhost")):
        out.log(
            f"warning: no auth key ({AUTH_KEY_VARIABLE} or --auth-key-file): anyone who can reach this port can "
            "record events"
        )

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(partial(receiver.serve, args.host, args.port))
            auth = f"checking signatures for {args.public_url}" if keys else "without authentication"
            print(f"snapbatch receive listening on http://{args.host}:{port}", file=out.stdout, flush=True)
            out.log(f"recording SnapshotComplete events in {path}, {auth}")
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
                async for signum in received:
                    out.log(f"{signal.Signals(signum).name}: stopping")
                    tg.cancel_scope.cancel()
                    return

    try:
        anyio.run(serve)
    except KeyboardInterrupt:
        pass
    finally:
        stats = receiver.statistics()
        out.log(
            f"{stats.recorded} events recorded, {stats.duplicates} redelivered, {stats.ignored} of other types, "
            f"{stats.rejected} rejected (403), {stats.malformed} malformed (400)"
        )
        store.close()
    return EXIT["ok"]


def poll_command(args: argparse.Namespace, env: Mapping[str, str], out: Out, metrics: MetricsFile | None = None) -> int:
    manifest, state = open_state(args, env, metrics)
    try:
        endpoint = resolve_target(args, manifest, env)
        # run's credentials chain (renewed as they expire: a long --until-done outlives an STS token)
        creds = find_provider(env, Path(env.get("HOME", str(Path.home()))), args.profile, log=out.log)
    except BaseException:
        state.close()
        raise
    options = PollOptions(rate_per_s=args.qps, until_done=args.until_done, timeout_s=args.timeout, every_s=args.every)
    # No lock: polling only records what the service says about jobs, so it may go on beside a run.
    try:
        out.log(f"batch {manifest.batch}: asking {endpoint} as {creds.current().access_key_id} ({creds.source})")
        store = events_path(args, manifest)
        if not store.exists():  # --events naming a missing file is refused by absorb_events
            out.log(
                f"no event store at {store}: only GetJobDetail's answers count, and they give no failure reason; "
                "if `snapbatch receive` writes elsewhere (it writes .snapbatch/events.sqlite3 in the directory it "
                "runs in), give its file with --events"
            )
        changed = absorb_events(args, manifest, state)
        if changed:
            out.log(f"{changed} requests updated from the receiver's events")
        if metrics is not None:
            metrics.poll = PollResult()
            metrics.started(state)
        with kept_signal_handlers():
            result = anyio.run(_poll_async, state, endpoint, creds, options, args, manifest, out, metrics)
        counts, completion = state.counts(), state.completion_counts()
    finally:
        state.close()
    out.log(
        f"asked about {result.asked} jobs in {result.passes} pass{'es' if result.passes != 1 else ''}: "
        f"{result.completed} completed, {result.failed} failed, {result.processing} processing, "
        f"{result.unknown} unknown to the service, {result.errors} errors, {result.throttled} throttled"
    )
    out.log(
        f"batch {manifest.batch}: {completion['completed']} completed, {completion['failed']} failed after submit, "
        f"{completion['processing']} processing, {completion['unknown']} unknown; "
        f"{counts['failed']} failed at submit, {counts['in_doubt']} in doubt, {counts['pending']} never sent"
    )
    if args.json:
        poll = {k: v for k, v in vars(result).items() if k != "fatal"}
        print(json.dumps({"batch": manifest.batch, "poll": poll, "completion": completion}), file=out.stdout)
    if result.fatal is not None:
        if result.fatal.http_status is None:  # decided here (credentials ran out unrenewed): nothing was sent
            out.log(f"stopped: {result.fatal.message}")
        else:
            out.log(f"stopped: the service answered {result.fatal.code}: {result.fatal.message}")
        return EXIT["fatal"]
    if completion["processing"] or completion["unknown"]:
        if result.timed_out:
            out.log("--timeout reached with jobs still open; poll again later")
        if metrics is not None and metrics.stop_reason is None:  # a signal said "interrupted" already
            metrics.stopped("timeout" if result.timed_out else "open-jobs")
        return EXIT["stopped"]
    if completion["failed"] or counts["failed"] or counts["in_doubt"] or counts["pending"] or counts["sending"]:
        return EXIT["failed"]
    return EXIT["ok"]


async def _poll_async(
    state: State,
    endpoint: str,
    creds: CredentialsProvider,
    options: PollOptions,
    args: argparse.Namespace,
    manifest: Manifest,
    out: Out,
    metrics: MetricsFile | None,
) -> PollResult:
    stop = anyio.Event()

    async def signals() -> None:
        # the caller's handlers back as the receiver closes (asyncio leaves SIG_DFL): a second SIGTERM while the
        # calls in flight finish, or one while the loop ends, goes to them instead of killing poll mid-way
        with kept_signal_handlers(), anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for signum in received:
                out.log(f"{signal.Signals(signum).name}: stopping after the calls in flight")
                if metrics is not None:
                    metrics.stopped("interrupted")
                stop.set()
                return

    async def write_metrics(metrics: MetricsFile) -> None:
        while True:
            await anyio.sleep(EVERY_S)
            await anyio.to_thread.run_sync(metrics.poll_progress, state)

    async with (
        VodClient(endpoint, creds, max_connections=options.concurrency) as client,
        anyio.create_task_group() as tg,
    ):
        if threading.current_thread() is threading.main_thread():
            tg.start_soon(signals)
        tg.start_soon(creds.keep_fresh)  # renews STS credentials ahead of expiry, off the calls' path
        if metrics is not None:
            tg.start_soon(write_metrics, metrics)
        result = await poll_jobs(
            state,
            client,
            Limiter(RateWindow(options.rate_per_s)),
            options,
            absorb=lambda: absorb_events(args, manifest, state),
            stop=stop,
            result=metrics.poll if metrics is not None else None,
        )
        tg.cancel_scope.cancel()
    return result
