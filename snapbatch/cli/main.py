"""The command line: argument parsing, the validate, plan and emulator commands, and the mapping of errors to
exit codes. The command line (this package) is the only part of snapbatch that prints or reads os.environ."""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio

from snapbatch import __version__
from snapbatch.cli.completion import AUTH_KEY_VARIABLE, poll_command, receive_command
from snapbatch.cli.output import EXIT, Out
from snapbatch.cli.run import plan_listings, report_command, resolve_target, run_command, status_command
from snapbatch.emulator import (
    CREDENTIALS_URI_PATH,
    Callbacks,
    Emulator,
    EmulatorConfig,
    StsConfig,
    load_videos,
    serve,
)
from snapbatch.emulator.catalogue import load_catalogue
from snapbatch.errors import (
    CredentialsError,
    LockedError,
    ManifestError,
    Problem,
    SnapbatchError,
    StateError,
    UsageError,
)
from snapbatch.manifest.expand import expand, search_jobs, survey
from snapbatch.manifest.load import load_manifest
from snapbatch.metrics import MetricsFile
from snapbatch.models import MIN_QPS
from snapbatch.report import plan_jsonl, plan_line, plan_summary
from snapbatch.run.listings import ListingError

__all__ = ["COMMANDS", "EXIT", "main"]

COMMANDS = ("validate", "plan", "run", "status", "report", "receive", "poll", "emulator")


EMULATOR_KEY_ID = "emulator-access-key-id"
EMULATOR_KEY_SECRET = "emulator-access-key-secret"  # the emulator's own throwaway key, not an Alibaba Cloud one

_EPILOG_MAIN = """\
commands:
  validate   check manifests; every problem as FILE:LINE:COL: WHERE: MESSAGE
  plan       show exactly what would be sent, and how long it takes
  run        send the batch (resumable; see `snapbatch run --help`)
  status     progress of a batch from its state file
  report     one row per request: CSV or JSONL; or the batch as one HTML page (--html)
  receive    record SnapshotComplete callbacks: which jobs completed or failed
  poll       ask GetJobDetail about submitted jobs whose outcome is still unknown
  emulator   serve a local VOD endpoint for trying things out

exit codes: 0 all submitted, 1 some failed, 2 manifest or usage error (nothing sent), 3 state locked by
another run, 4 stopped by an account/credential error, 5 stopped with work left (--max-requests,
--max-duration, retry budget, outage, endpoint unreachable), 6 state file unusable, 130 interrupted
(resumable)

example:
  snapbatch validate jobs.example.yaml && snapbatch run jobs.example.yaml --emulator
"""


def _parser(out: Out) -> argparse.ArgumentParser:
    class Parser(argparse.ArgumentParser):
        """Prints help and usage errors to the streams main() was given, so in-process callers see them."""

        def _print_message(self, message: str, file: object = None) -> None:
            if message:
                (out.stderr if file is sys.stderr else out.stdout).write(message)

    fmt = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="snapbatch",
        description="Submit ApsaraVideo VOD snapshot jobs from a checked-in manifest, as fast as the quota allows.",
        epilog=_EPILOG_MAIN,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"snapbatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "validate",
        help="check manifests without sending anything",
        formatter_class=fmt,
        description="Check manifests (and the ID files they name) without sending anything. Every problem is "
        "reported on stderr as FILE:LINE:COL: WHERE: MESSAGE. Exit 0 when all are valid (warnings allowed), 2 "
        "otherwise.",
        epilog="examples:\n  snapbatch validate jobs.yaml\n  snapbatch validate manifests/*.yaml --format json",
    )
    p.add_argument("manifests", nargs="+", metavar="MANIFEST", type=Path)
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: one document on stdout listing every problem (default: text)",
    )

    p = sub.add_parser(
        "plan",
        help="show exactly what would be sent",
        formatter_class=fmt,
        description="Show what `run` would send. Search jobs use the list frozen in the batch's state; without one "
        "they are listed through SearchMedia now (credentials needed; --offline names them instead). Nothing else "
        "touches the network. text: a summary (requests per job and "
        "template, duplicates folded, estimated duration), then one line per request. jsonl: one JSON object "
        "a line, {job, key, params}, params exactly as sent (no signature or common parameters).",
        epilog="examples:\n  snapbatch plan jobs.yaml\n  snapbatch plan jobs.yaml --format jsonl | head",
    )
    p.add_argument("manifest", metavar="MANIFEST", type=Path)
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.add_argument("--summary", action="store_true", help="text format: the summary only, no request lines")
    p.add_argument(
        "--offline",
        action="store_true",
        help="do not list search jobs through SearchMedia (which needs credentials); name them instead",
    )
    _add_state_arg(p)
    p.add_argument("--emulator", action="store_true", help="use the lists frozen by `run --emulator` rehearsals")
    _add_target_args(p)
    p.add_argument("--qps", type=_qps, help="estimate at this rate instead of the manifest's")
    p = sub.add_parser(
        "run",
        help="send the batch",
        formatter_class=fmt,
        description="Send every request of the manifest that the state file does not record as submitted, at "
        "most --qps calls in any second, retrying throttled, transient and unanswered calls. Resumable: kill it, "
        "run it again, it continues. A second run on the same state (by any path) exits 3. Ctrl-C or SIGTERM: no "
        "new calls, those in flight get 5 s, exit 130; a second Ctrl-C stops at once (what was in flight is in "
        "doubt).",
        epilog="examples:\n  snapbatch run jobs.example.yaml --emulator\n  snapbatch run jobs.yaml --json\n"
        "  snapbatch run jobs.yaml --max-duration 3600   # a slice per night from cron; exit 5 means work left\n\n"
        "credentials: ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET(/_SECURITY_TOKEN), else the aliyun CLI profile "
        "(--profile, ALIBABA_CLOUD_PROFILE, its current), else ~/.alibabacloud/credentials.ini [default]",
    )
    p.add_argument("manifest", metavar="MANIFEST", type=Path)
    _add_state_arg(p)
    _add_target_args(p)
    p.add_argument("--profile", help="aliyun CLI profile to take credentials from")
    p.add_argument("--qps", type=_qps, help=f"calls per second (overrides the manifest; at least {MIN_QPS:g})")
    p.add_argument(
        "--concurrency", type=_positive_int, help="calls in flight at most (default: enough for qps with 2.5 s answers)"
    )
    p.add_argument(
        "--quota",
        metavar="WHERE",
        help="share the key's qps with other runs: local (runs on this host; default), off (pace alone) or "
        "redis://HOST:PORT/DB (runs on every machine using it); default: SNAPBATCH_QUOTA, else the manifest's",
    )
    p.add_argument(
        "--quota-wait",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait, sending nothing, for an unreachable shared quota before stopping (exit 5; 60)",
    )
    p.add_argument("--emulator", action="store_true", help="run against a built-in emulator on loopback")
    p.add_argument(
        "--catalogue",
        type=Path,
        metavar="FILE",
        help="with --emulator: the videos its SearchMedia finds for search jobs (JSON Lines, see `emulator`)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout at the end")
    p.add_argument("--retry-failed", action="store_true", help="send again what is recorded as failed")
    p.add_argument(
        "--resubmit-failed-jobs",
        action="store_true",
        help="send again the requests whose job failed after it was submitted (event or GetJobDetail said Fail)",
    )
    _add_events_arg(p)
    p.add_argument(
        "--relist",
        action="store_true",
        help="list search jobs through SearchMedia again instead of using the list frozen at their first run",
    )
    p.add_argument(
        "--search-qps",
        type=_positive_float,
        metavar="N",
        help="SearchMedia calls per second while listing search jobs (default 50, the documented limit)",
    )
    p.add_argument(
        "--in-doubt",
        choices=("resend", "skip"),
        default="resend",
        help="requests whose answer was lost: send again (default; at-least-once) or leave them",
    )
    p.add_argument("--max-requests", type=_positive_int, metavar="N", help="stop after starting N requests")
    p.add_argument("--max-duration", type=_positive_float, metavar="SECONDS", help="stop starting calls after this")
    p.add_argument(
        "--progress-every",
        type=_positive_float,
        metavar="SECONDS",
        help="progress line interval (default: 1 s on a terminal, 10 s in a log)",
    )
    _add_metrics_arg(p)

    p = sub.add_parser(
        "status",
        help="progress of a batch",
        formatter_class=fmt,
        description="Counts by status, the rate and ETA of a running batch, the most common recent errors, and "
        "how many recorded requests the manifest no longer names.",
        epilog="examples:\n  snapbatch status jobs.yaml\n  snapbatch status jobs.yaml --json",
    )
    p.add_argument("manifest", metavar="MANIFEST", type=Path)
    _add_state_arg(p)
    p.add_argument("--emulator", action="store_true", help="the state of `run --emulator` rehearsals")
    _add_events_arg(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "report",
        help="one row per request",
        formatter_class=fmt,
        description="One row per request: job, key, VideoId or ReferenceId, status, JobId, RequestId, "
        "error_code, error_message, attempts, submitted_at. With --html FILE, instead, the whole batch as one "
        "self-contained HTML page (nothing on stdout).",
        epilog="examples:\n  snapbatch report jobs.yaml > report.csv\n"
        "  snapbatch report jobs.yaml --format jsonl --only failed\n"
        "  snapbatch report jobs.yaml --html report.html   # open it in a browser, attach it to a mail",
    )
    p.add_argument("manifest", metavar="MANIFEST", type=Path)
    _add_state_arg(p)
    p.add_argument("--emulator", action="store_true", help="the state of `run --emulator` rehearsals")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("--only", choices=("failed", "in_doubt", "submitted", "pending"))
    p.add_argument(
        "--completion",
        choices=("completed", "failed", "processing", "unknown"),
        help="only submitted requests whose job is in this state",
    )
    p.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="instead of rows, write the whole batch as one self-contained HTML page: counts, rate against the "
        "limit, throttles and errors over time, failures by code with what to do, per job",
    )
    _add_events_arg(p)

    p = sub.add_parser(
        "receive",
        help="record SnapshotComplete callbacks",
        formatter_class=fmt,
        description="Serve HTTP for VOD's SnapshotComplete callbacks and record each event in an event store "
        "(answering 200 only once it is on disk). run, status, report and poll bring the events into each "
        "batch's state by JobId, or by the request key snapbatch puts in UserData.Extend. With an auth key "
        f"(environment {AUTH_KEY_VARIABLE}, or --auth-key-file) it checks X-VOD-TIMESTAMP and X-VOD-SIGNATURE "
        "against --public-url and answers 403 to anything else. Runs until stopped.",
        epilog="examples:\n  snapbatch receive --port 8090\n"
        f"  {AUTH_KEY_VARIABLE}=... snapbatch receive --port 8090 --public-url https://hooks.example.com/vod\n",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: behind a proxy)")
    p.add_argument("--port", type=int, default=8090, help="port (default 8090; 0 picks a free one)")
    p.add_argument(
        "--events", type=Path, metavar="PATH", help="event store to write (default .snapbatch/events.sqlite3 here)"
    )
    p.add_argument("--public-url", metavar="URL", help="the callback URL exactly as configured in VOD (signed)")
    p.add_argument("--auth-key-file", type=Path, metavar="FILE", help="the auth key (a second line: the next key)")
    p.add_argument(
        "--max-age", type=_positive_float, default=300.0, metavar="SECONDS", help="oldest X-VOD-TIMESTAMP taken (300)"
    )

    p = sub.add_parser(
        "poll",
        help="ask GetJobDetail about open jobs",
        formatter_class=fmt,
        description="Ask GetJobDetail about every submitted request whose job has no final state yet (its "
        "callback was lost, or none is configured), at most --qps calls a second, and record the answers. "
        "Resumable. Exit 0: every request's job completed; 1: every job is finished and some failed (or some "
        "requests were never submitted); 5: jobs still open (without --until-done, or at --timeout).",
        epilog="examples:\n  snapbatch poll jobs.yaml\n  snapbatch poll jobs.yaml --until-done --timeout 3600",
    )
    p.add_argument("manifest", metavar="MANIFEST", type=Path)
    _add_state_arg(p)
    _add_events_arg(p)
    _add_target_args(p)
    p.add_argument("--profile", help="aliyun CLI profile to take credentials from")
    p.add_argument("--qps", type=_positive_float, default=10.0, help="GetJobDetail calls per second (default 10)")
    p.add_argument("--until-done", action="store_true", help="poll again until no job is open")
    p.add_argument("--timeout", type=_positive_float, metavar="SECONDS", help="give up after this long (exit 5)")
    p.add_argument(
        "--every", type=_positive_float, default=60.0, metavar="SECONDS", help="pause between passes (default 60)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout at the end")
    _add_metrics_arg(p)

    p = sub.add_parser(
        "emulator",
        help="serve a local VOD endpoint",
        formatter_class=fmt,
        description="Serve a local ApsaraVideo VOD endpoint until stopped (Ctrl-C): it checks V1 and V3 "
        "signatures, the timestamp, nonce reuse and STS tokens, enforces the per-second limit per AccessKeyId "
        "(Throttling.User), answers SubmitSnapshotJob and GetJobDetail with the real JSON and HTTP statuses, "
        "SearchMedia over a --catalogue (PageNo and ScrollToken paging, 50 calls/s), "
        "and injects faults on request. Prints where it listens and which credentials it accepts.",
        epilog="examples:\n  snapbatch emulator --port 8080\n"
        "  snapbatch emulator --port 8443 --tls-cert cert.pem --tls-key key.pem   # HTTPS; clients trust it with "
        "SSL_CERT_FILE=ca.pem\n"
        "  snapbatch emulator --qps 30 --latency-ms 20 80 --fail InternalError=0.05 --fail drop-after=0.01 "
        "--log calls.jsonl\n\nfault codes: any VOD error Code (Throttling.User, ServiceUnavailable, "
        "InternalError, Forbidden.RAM, ...), drop-before (close without answer, no job) and drop-after (make the "
        "job, then close without answer)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--qps", type=_qps, default=30.0, help="calls per second per AccessKeyId (30)")
    p.add_argument(
        "--latency-ms",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=(0.0, 0.0),
        help="answer after a uniform random delay in [LO, HI] ms",
    )
    p.add_argument(
        "--path-jitter-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="delay each request a random 0..MS ms before it counts, like a network path (default 0)",
    )
    p.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="CODE=RATE",
        type=_fault,
        help="answer CODE (or drop-before / drop-after) for this share of calls; repeatable",
    )
    p.add_argument(
        "--videos",
        type=Path,
        metavar="FILE",
        help="known videos, `VideoId` or `VideoId,ReferenceId` lines; others get InvalidVideo.NotFound",
    )
    p.add_argument(
        "--catalogue",
        type=Path,
        metavar="FILE",
        help="videos for SearchMedia: JSON Lines of {VideoId, CateId, CreationTime, Status, Title, Tags}",
    )
    p.add_argument("--search-qps", type=_positive_float, default=50.0, help="SearchMedia calls per second (50)")
    p.add_argument("--log", type=Path, metavar="FILE", help="append every call as a JSON line (no secrets)")
    p.add_argument(
        "--job-seconds", type=float, default=2.0, help="a job is Processing this long, then completes (default 2)"
    )
    p.add_argument(
        "--job-fail", type=_rate, default=0.0, metavar="RATE", help="share of jobs that fail after being accepted"
    )
    p.add_argument(
        "--callback-url", metavar="URL", help="global SnapshotComplete callback URL (a job's own UserData one wins)"
    )
    p.add_argument("--callback-auth-key", metavar="KEY", help="sign callbacks with this auth key")
    p.add_argument("--callback-drop", type=_rate, default=0.0, metavar="RATE", help="share of events lost for good")
    p.add_argument(
        "--callback-duplicate", type=_rate, default=0.0, metavar="RATE", help="share of events delivered twice"
    )
    p.add_argument("--access-key-id", default=EMULATOR_KEY_ID)
    p.add_argument("--access-key-secret", default=EMULATOR_KEY_SECRET)
    p.add_argument("--security-token", help="require this STS token")
    p.add_argument("--seed", type=int, help="seed for faults and latency, for repeatable runs")
    p.add_argument(
        "--query-only",
        action="store_true",
        help="read API parameters from the query string only, ignoring a form body, as a gateway that reads "
        "only the query would",
    )
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate (chain)")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    p.add_argument(
        "--sts-lifetime",
        type=float,
        metavar="SECONDS",
        help="also act as STS (AssumeRole signed by the key above, and a credentials URI at /credentials), "
        "issuing credentials that expire after SECONDS (0: as DurationSeconds asks); their calls count "
        "against the role's account",
    )
    return parser


def _fault(text: str) -> tuple[str, float]:
    code, sep, rate = text.partition("=")
    try:
        value = float(rate)
    except ValueError:
        value = -1.0
    if not sep or not code or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not CODE=RATE with RATE between 0 and 1")
    return code, value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate between 0 and 1")
    return value


def _add_events_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--events",
        type=Path,
        metavar="PATH",
        help="the event store `snapbatch receive` writes (default .snapbatch/events.sqlite3 beside the manifest)",
    )


def _add_metrics_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics to PATH (a name ending in .prom, for node_exporter's textfile collector) at "
        "the start, with the progress at most every 10 s, and at the exit, whatever the exit",
    )


def _add_state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state", type=Path, metavar="PATH", help="state file (default .snapbatch/BATCH.sqlite3 beside the manifest)"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", help="endpoint URL (default: the manifest's, else https://vod.REGION.aliyuncs.com)")
    p.add_argument(
        "--region", help="region ID (default: the manifest's, else ALIBABA_CLOUD_REGION_ID, else cn-shanghai)"
    )


def _qps(text: str) -> float:
    value = _positive_float(text)
    if value < MIN_QPS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_QPS:g} (one call every {1 / MIN_QPS:g} s), not {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one snapbatch command; return its exit code."""
    out = Out(stdout or sys.stdout, stderr or sys.stderr)
    environ = os.environ if env is None else env
    parser = _parser(out)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error or the help
        return int(exc.code or 0) if exc.code in (0, None) else EXIT["usage"]
    if args.command is None:
        parser.print_help(out.stdout)
        return EXIT["usage"]
    metrics: MetricsFile | None = None
    if getattr(args, "metrics_file", None) is not None:
        try:  # refused before anything is read or sent: a file no one can collect monitors nothing
            metrics = MetricsFile(args.metrics_file, args.command, log=out.log)
        except UsageError as exc:
            out.log(str(exc))
            return EXIT["usage"]
    code: int | None = None
    try:
        with _sigterm_interrupts(args.command in ("run", "poll")):
            code = _command(args, environ, out, metrics)
    finally:
        if metrics is not None:  # every exit writes its reason, a traceback's too ("crashed")
            with _sigterm_deferred(args.command in ("run", "poll")):
                metrics.finish(code)
    return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm(wanted: bool, handler: Callable[[int, Any], None] | int) -> Iterator[None]:
    """SIGTERM handled by ``handler`` in the block (for run and poll, in the main thread), then as before."""
    if not wanted or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:  # None: a handler set outside Python, which cannot be put back from here
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


def _sigterm_interrupts(wanted: bool) -> AbstractContextManager[None]:
    """SIGTERM as Ctrl-C for run and poll outside their own signal handling (reading the manifest, say): exit
    130 after the usual words and the metrics file's last write, not a silent death."""
    return _sigterm(wanted, _interrupt)


def _sigterm_deferred(wanted: bool) -> AbstractContextManager[None]:
    """SIGTERM ignored for the moment of the last write (the exit follows at once): the metrics file then always
    says how the command ended, instead of the last progress write's "running"."""
    return _sigterm(wanted, signal.SIG_IGN)


def _command(args: argparse.Namespace, environ: Mapping[str, str], out: Out, metrics: MetricsFile | None) -> int:
    """The command's exit code, its errors mapped to theirs."""
    try:
        if args.command == "validate":
            return _validate(args, environ, out)
        if args.command == "plan":
            return _plan(args, environ, out)
        if args.command == "emulator":
            return _emulator(args, out)
        if args.command == "run":
            return run_command(args, environ, out, metrics)
        if args.command == "status":
            return status_command(args, environ, out)
        if args.command == "report":
            return report_command(args, environ, out)
        if args.command == "receive":
            return receive_command(args, environ, out)
        if args.command == "poll":
            return poll_command(args, environ, out, metrics)
    except ManifestError as exc:
        out.problems(exc.problems)
        return EXIT["usage"]
    except UsageError as exc:
        out.log(str(exc))
        return EXIT["usage"]
    except LockedError as exc:
        out.log(str(exc))
        return EXIT["locked"]
    except StateError as exc:
        out.log(str(exc))
        return EXIT["state"]
    except ListingError as exc:  # may quote SearchMedia's Code and Message: escaped by out.log
        out.log(str(exc))
        return EXIT[exc.exit]
    except CredentialsError as exc:  # none found, or the exchange for them failed: nothing was sent
        out.log(str(exc))
        return EXIT["fatal"]
    except SnapbatchError as exc:
        out.log(str(exc))
        return EXIT["usage"]
    except BrokenPipeError:  # `snapbatch plan ... | head`
        return EXIT["ok"]
    except KeyboardInterrupt:  # outside a run's own signal handling (loading, ingesting, a report)
        out.log("interrupted; what was committed is kept, run again to continue")
        return EXIT["interrupted"]
    raise AssertionError(f"unhandled command {args.command}")


def _validate(args: argparse.Namespace, env: Mapping[str, str], out: Out) -> int:
    results = []
    worst = EXIT["ok"]
    for path in args.manifests:
        problems: list[Problem] = []
        count = None
        searches: list[str] = []  # listed only when run: their requests are not counted here
        try:
            manifest = load_manifest(path, env)
            found = survey(manifest)
            problems = [*manifest.warnings, *found.warnings]
            count = found.unique
            searches = [job.name for job in search_jobs(manifest)]
        except ManifestError as exc:
            problems = exc.problems
            worst = EXIT["usage"]
        errors = [p for p in problems if p.severity == "error"]
        if args.format == "text":
            out.problems(problems)
            if errors:
                print(f"{path}: invalid ({len(errors)} error{'s' if len(errors) != 1 else ''})", file=out.stderr)
            else:
                plural = "s" if len(searches) != 1 else ""
                listed = f" (+ {len(searches)} search job{plural}, listed when run)" if searches else ""
                print(f"{path}: valid, {count} request{'s' if count != 1 else ''}{listed}", file=out.stdout)
        results.append(
            {
                "file": str(path),
                "valid": not errors,
                "requests": count,
                "search_jobs": searches,
                "problems": [
                    {
                        "file": p.file,
                        "line": p.line,
                        "col": p.col,
                        "where": p.where,
                        "severity": p.severity,
                        "message": p.message,
                    }
                    for p in problems
                ],
            }
        )
    if args.format == "json":
        print(json.dumps({"valid": worst == EXIT["ok"], "manifests": results}, indent=2), file=out.stdout)
    return worst


def _plan(args: argparse.Namespace, env: Mapping[str, str], out: Out) -> int:
    manifest = load_manifest(args.manifest, env)
    endpoint = resolve_target(args, manifest, env)
    qps = args.qps or manifest.qps
    with plan_listings(args, manifest, env, out) as listings:
        # reads every ID once more, so that nothing is printed for an invalid manifest
        found = survey(manifest, listings)
        out.problems([*manifest.warnings, *found.warnings])
        write = out.stdout.write
        if args.format == "jsonl":
            for line in plan_jsonl(expand(manifest, candidates=found.candidates, listings=listings)):
                write(line)
            return EXIT["ok"]
        write(plan_summary(manifest, found, qps, endpoint))
        if not args.summary:
            write("\n")
            for request in expand(manifest, candidates=found.candidates, listings=listings):
                write(plan_line(request) + "\n")
    return EXIT["ok"]


def _server_tls(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use --tls-cert {cert} with --tls-key {key}: {exc}") from None
    return context


def _emulator(args: argparse.Namespace, out: Out) -> int:
    faults = dict(args.fail)
    if sum(faults.values()) > 1:
        raise UsageError("the --fail rates add up to more than 1")
    try:
        videos = load_videos(args.videos) if args.videos else None
    except OSError as exc:
        raise UsageError(f"cannot read --videos {args.videos}: {exc.strerror or exc}") from None
    try:
        catalogue = load_catalogue(args.catalogue) if args.catalogue else None
    except OSError as exc:
        raise UsageError(f"cannot read --catalogue {args.catalogue}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"--catalogue: {exc}") from None
    config = EmulatorConfig(
        credentials={args.access_key_id: (args.access_key_secret, args.security_token)},
        qps=args.qps,
        latency_ms=tuple(args.latency_ms),
        path_jitter_ms=args.path_jitter_ms,
        faults=faults,
        videos=videos,
        job_seconds=args.job_seconds,
        job_fail_rate=args.job_fail,
        callback_url=args.callback_url,
        callback_auth_key=args.callback_auth_key,
        callback_drop_rate=args.callback_drop,
        callback_duplicate_rate=args.callback_duplicate,
        seed=args.seed,
        sts=None if args.sts_lifetime is None else StsConfig(lifetime_s=args.sts_lifetime or None),
        query_only=args.query_only,
        catalogue=catalogue,
        search_qps=args.search_qps,
    )
    tls = _server_tls(args.tls_cert, args.tls_key)
    log = args.log.open("a", encoding="utf-8") if args.log else None
    emulator = Emulator(config, log_file=log)
    callbacks = Callbacks(emulator)

    async def serve_until_stopped() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(partial(serve, emulator, args.host, args.port, ssl_context=tls))
            tg.start_soon(callbacks.run)
            secret = (
                ("secret " + EMULATOR_KEY_SECRET)
                if args.access_key_secret == EMULATOR_KEY_SECRET
                else "the secret given"
            )
            token = " and the security token given" if args.security_token else ""
            scheme = "https" if tls is not None else "http"
            print(f"snapbatch emulator listening on {scheme}://{args.host}:{port}", file=out.stdout)
            print(
                f"accepting AccessKeyId {args.access_key_id} with {secret}{token}; {args.qps:g} calls/s per key",
                file=out.stdout,
                flush=not config.sts,
            )
            if config.sts is not None:
                lasting = f"{args.sts_lifetime:g} s" if args.sts_lifetime else "DurationSeconds"
                print(
                    f"also STS: AssumeRole at {args.host}:{port}, a credentials URI at "
                    f"{scheme}://{args.host}:{port}{CREDENTIALS_URI_PATH}; credentials last {lasting}",
                    file=out.stdout,
                    flush=True,
                )
            if args.callback_url:
                signed = "signed" if args.callback_auth_key else "unsigned"
                print(
                    f"jobs complete after {args.job_seconds:g} s; SnapshotComplete events go to {args.callback_url} "
                    f"({signed}) unless a job names its own URL",
                    file=out.stdout,
                    flush=True,
                )

    try:
        anyio.run(serve_until_stopped)
    except KeyboardInterrupt:
        pass
    finally:
        if log is not None:
            log.close()
    return EXIT["ok"]
