"""The command line: argument parsing, wiring, exit codes. The only module that prints or reads os.environ."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from snapbatch import __version__
from snapbatch.endpoint import resolve_endpoint, resolve_region
from snapbatch.errors import ManifestError, Problem, SnapbatchError, UsageError
from snapbatch.expand import expand, survey
from snapbatch.manifest import load_manifest
from snapbatch.models import Manifest
from snapbatch.report import plan_jsonl, plan_line, plan_summary

__all__ = ["COMMANDS", "EXIT", "main"]

COMMANDS = ("validate", "plan")

EXIT = {
    "ok": 0,
    "failed": 1,
    "usage": 2,
    "locked": 3,
    "fatal": 4,
    "stopped": 5,
    "state": 6,
    "interrupted": 130,
}

_EPILOG_MAIN = """\
commands:
  validate   check manifests; every problem as FILE:LINE:COL: WHERE: MESSAGE
  plan       show exactly what would be sent, and how long it takes
  run        send the batch (resumable; see `snapbatch run --help`)
  status     progress of a batch from its state file
  report     one row per request: CSV or JSONL
  emulator   serve a local VOD endpoint for trying things out

exit codes: 0 all submitted, 1 some failed, 2 manifest or usage error (nothing sent), 3 state locked by
another run, 4 stopped by an account/credential error, 5 stopped with work left (--max-requests,
--max-duration, retry budget), 6 state file unusable, 130 interrupted (resumable)

example:
  snapbatch validate jobs.example.yaml && snapbatch run jobs.example.yaml --emulator
"""


class _Out:
    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr

    def problems(self, problems: Sequence[Problem]) -> None:
        for p in problems:
            print(p.format(), file=self.stderr)


def _parser(out: _Out) -> argparse.ArgumentParser:
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
        description="Show what `run` would send, without any network. text: a summary (requests per job and "
        "template, duplicates folded, estimated duration), then one line per request. jsonl: one JSON object "
        "a line, {job, key, params}, params exactly as sent (no signature or common parameters).",
        epilog="examples:\n  snapbatch plan jobs.yaml\n  snapbatch plan jobs.yaml --format jsonl | head",
    )
    p.add_argument("manifest", metavar="MANIFEST", type=Path)
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.add_argument("--summary", action="store_true", help="text format: the summary only, no request lines")
    _add_target_args(p)
    p.add_argument("--qps", type=_positive_float, help="estimate at this rate instead of the manifest's")
    return parser


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", help="endpoint URL (default: the manifest's, else https://vod.REGION.aliyuncs.com)")
    p.add_argument(
        "--region", help="region ID (default: the manifest's, else ALIBABA_CLOUD_REGION_ID, else cn-shanghai)"
    )


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
    out = _Out(stdout or sys.stdout, stderr or sys.stderr)
    environ = os.environ if env is None else env
    parser = _parser(out)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error or the help
        return int(exc.code or 0) if exc.code in (0, None) else EXIT["usage"]
    if args.command is None:
        parser.print_help(out.stdout)
        return EXIT["usage"]
    try:
        if args.command == "validate":
            return _validate(args, environ, out)
        if args.command == "plan":
            return _plan(args, environ, out)
    except ManifestError as exc:
        out.problems(exc.problems)
        return EXIT["usage"]
    except UsageError as exc:
        print(f"snapbatch: {exc}", file=out.stderr)
        return EXIT["usage"]
    except SnapbatchError as exc:
        print(f"snapbatch: {exc}", file=out.stderr)
        return EXIT["usage"]
    except BrokenPipeError:  # `snapbatch plan ... | head`
        return EXIT["ok"]
    raise AssertionError(f"unhandled command {args.command}")


def _validate(args: argparse.Namespace, env: Mapping[str, str], out: _Out) -> int:
    results = []
    worst = EXIT["ok"]
    for path in args.manifests:
        problems: list[Problem] = []
        count = None
        try:
            manifest = load_manifest(path, env)
            found = survey(manifest)
            problems = [*manifest.warnings, *found.warnings]
            count = found.unique
        except ManifestError as exc:
            problems = exc.problems
            worst = EXIT["usage"]
        errors = [p for p in problems if p.severity == "error"]
        if args.format == "text":
            out.problems(problems)
            if errors:
                print(f"{path}: invalid ({len(errors)} error{'s' if len(errors) != 1 else ''})", file=out.stderr)
            else:
                print(f"{path}: valid, {count} requests", file=out.stdout)
        results.append(
            {
                "file": str(path),
                "valid": not errors,
                "requests": count,
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


def _load_for_sending(args: argparse.Namespace, env: Mapping[str, str], out: _Out) -> tuple[Manifest, str, float]:
    manifest = load_manifest(args.manifest, env)
    region = resolve_region(args.region, manifest.region, env.get("ALIBABA_CLOUD_REGION_ID"))
    endpoint = resolve_endpoint(args.endpoint, manifest.endpoint, region)
    qps = args.qps or manifest.qps
    return manifest, endpoint, qps


def _plan(args: argparse.Namespace, env: Mapping[str, str], out: _Out) -> int:
    manifest, endpoint, qps = _load_for_sending(args, env, out)
    found = survey(manifest)  # reads every ID once more, so that nothing is printed for an invalid manifest
    out.problems([*manifest.warnings, *found.warnings])
    write = out.stdout.write
    if args.format == "jsonl":
        for line in plan_jsonl(expand(manifest, candidates=found.candidates)):
            write(line)
        return EXIT["ok"]
    write(plan_summary(manifest, found, qps, endpoint))
    if not args.summary:
        write("\n")
        for request in expand(manifest, candidates=found.candidates):
            write(plan_line(request) + "\n")
    return EXIT["ok"]
