"""validate and plan through the command line, in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, CliRunner

EXAMPLE = str(ROOT / "jobs.example.yaml")
INVALID = ROOT / "tests" / "manifests" / "invalid"


def test_validate_example_ok(cli: CliRunner) -> None:
    """The example validates: exit 0, a one-line verdict on stdout, nothing on stderr."""
    r = cli("validate", EXAMPLE)
    assert (r.code, r.err) == (0, "")
    assert r.out == f"{EXAMPLE}: valid, 11 requests\n"


def test_validate_reports_every_problem_of_every_file(cli: CliRunner) -> None:
    """Several manifests: all problems of all files on stderr, exit 2."""
    bad1, bad2 = INVALID / "number-ranges.yaml", INVALID / "param-typo.yaml"
    r = cli("validate", EXAMPLE, str(bad1), str(bad2))
    assert r.code == 2
    lines = r.err.splitlines()
    assert sum(line.startswith(f"{bad1}:") and ": must be" in line for line in lines) == 7
    assert sum(line.startswith(f"{bad2}:") and "unknown key" in line for line in lines) == 2
    assert f"{EXAMPLE}: valid" in r.out


def test_validate_lists_problems_in_reading_order(cli: CliRunner) -> None:
    """Problems found by different checks (shape, references, IDs) come out sorted as a reader meets them:
    the manifest by line and column, then each ID file."""
    path = INVALID / "ids-beside-other-errors.yaml"
    r = cli("validate", str(path))
    located = [line.split(": ", 1)[0] for line in r.err.splitlines() if not line.endswith("errors)")]
    assert located == [
        f"{path}:7:28",
        f"{path}:8:15",
        f"{path}:9:11",
        f"{INVALID}/files/bad-ids.txt:2:1",
        f"{INVALID}/files/bad-ids.txt:5:1",
    ], r.err


def test_one_request_reads_as_one(cli: CliRunner, tmp_path: Path) -> None:
    """A single request: '1 request', not '1 requests', and no '0.0 s' estimate."""
    path = tmp_path / "one.yaml"
    path.write_text("version: 1\nbatch: one\njobs:\n  - {name: a, videos: [v1], params: {Count: 1}}\n")
    assert cli("validate", str(path)).out == f"{path}: valid, 1 request\n"
    summary = cli("plan", str(path), "--summary").out.splitlines()
    assert summary[0] == "batch one: 1 request"
    assert summary[1].endswith("calls/s: under 0.1 s at full rate"), summary
    assert summary[2].split()[-2:] == ["1", "request"]


def test_validate_json_format(cli: CliRunner) -> None:
    """--format json: one document with every problem located."""
    r = cli("validate", str(INVALID / "param-typo.yaml"), "--format", "json")
    doc = json.loads(r.out)
    assert r.code == 2 and doc["valid"] is False
    (entry,) = doc["manifests"]
    assert [(p["line"], p["col"], p["where"]) for p in entry["problems"]] == [
        (4, 5, "defaults.Widht"),
        (9, 14, "jobs[0].params.Heigth"),
    ]


def test_validate_missing_file(cli: CliRunner, tmp_path: Path) -> None:
    """A manifest that does not exist: exit 2, the path and the reason."""
    r = cli("validate", str(tmp_path / "nope.yaml"))
    assert r.code == 2
    assert f"{tmp_path / 'nope.yaml'}: cannot read the manifest: No such file or directory" in r.err


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01\x02garbage",
        b"- just\n- a list\n",
        b"version: 1\n" * 3,
        b"{",
        b"!!binary AAAA",
        b"'unterminated",
        b"a: " + b"[" * 3000,
        b"&a [*a]",
        b"? [complex]\n: key\n",
        b"jobs: {<<: 5}",
        b"",
    ],
)
def test_validate_never_tracebacks(cli: CliRunner, tmp_path: Path, content: bytes) -> None:
    """Whatever the file holds: exit 2 and located messages, never a traceback."""
    path = tmp_path / "m.yaml"
    path.write_bytes(content)
    r = cli("validate", str(path))
    assert r.code == 2
    assert "Traceback" not in r.err and r.err.startswith(str(path))


def test_python_tag_runs_nothing(cli: CliRunner, tmp_path: Path) -> None:
    """A Python tag is an error and the code in it never runs."""
    marker = tmp_path / "pwned"
    path = tmp_path / "m.yaml"
    path.write_text(f'version: 1\nbatch: !!python/object/apply:os.system ["touch {marker}"]\njobs: []\n')
    r = cli("validate", str(path))
    assert r.code == 2 and "is not allowed" in r.err
    assert not marker.exists()


def test_huge_value_fails_fast(cli: CliRunner, tmp_path: Path) -> None:
    """A manifest over the size limit is refused with a hint, without parsing it."""
    path = tmp_path / "m.yaml"
    path.write_bytes(b"version: 1\nbatch: x\njobs: [" + b"'v-000001'," * 2_000_000 + b"]\n")
    r = cli("validate", str(path))
    assert r.code == 2 and "byte limit" in r.err and "{file: PATH}" in r.err


def test_plan_jsonl_is_exactly_what_run_sends(cli: CliRunner) -> None:
    """plan --format jsonl: one object per request with job, key and the wire parameters as strings."""
    r = cli("plan", EXAMPLE, "--format", "jsonl", env={"HOOK_HOST": "cb.test"})
    assert r.code == 0 and r.err == ""
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert len(rows) == 11
    assert all(set(row) == {"job", "key", "params"} for row in rows)
    assert all(isinstance(v, str) for row in rows for v in row["params"].values())
    catalog = next(row for row in rows if row["job"] == "catalog")
    assert catalog["params"] == {
        "VideoId": "c1b2a3d4e5f60718293a4b5c6d7e0001",
        "Count": "20",
        "Height": "720",
        "Interval": "0",
        "SpriteSnapshotConfig": '{"CellHeight":68,"CellWidth":120,"Columns":10,"KeepCellPic":"delete","Lines":10}',
        # the request's own key rides in the Extend mapping, so its SnapshotComplete event names it
        "UserData": '{"Extend":{"campaign":"autumn","snapbatch":"'
        + catalog["key"]
        + '"},"MessageCallback":{"CallbackURL":"https://cb.test/vod"}}',
        "Width": "1280",
    }
    partner = [row["params"]["ReferenceId"] for row in rows if row["job"] == "partner-feed"]
    assert partner == ["partner-ep-0001", "partner-ep-0002", "partner-ep-0003", "partner-ep-0004"]
    again = cli("plan", EXAMPLE, "--format", "jsonl", env={"HOOK_HOST": "cb.test"})
    assert again.out == r.out


def test_plan_text_summary(cli: CliRunner) -> None:
    """plan text: per job and template counts, the endpoint and an estimate, then one line per request."""
    r = cli("plan", EXAMPLE)
    lines = r.out.splitlines()
    assert lines[0] == "batch catalog-2026-11: 11 requests"
    assert lines[1] == "endpoint https://vod.cn-shanghai.aliyuncs.com, at most 30 calls/s: about 0.4 s at full rate"
    assert lines[2].split() == ["homepage", "template", "poster", "2", "requests"]
    assert lines[4].split() == ["partner-feed", "no", "template", "4", "requests"]
    assert len([line for line in lines[6:] if line]) == 11


def test_plan_estimate_for_a_big_batch(cli: CliRunner, tmp_path: Path) -> None:
    """200,000 videos at 30/s: the summary says about 1 h 51 min (6,667 s). (A million would take 8 s to
    read; how plan scales to one is bench/plan_scale.py's to measure.) Slow by nature: 200,000 IDs read and expanded."""
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"v{i:08d}\n" for i in range(200_000)))
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nbatch: big\njobs:\n  - {name: all, videos: {file: ids.txt}, params: {Count: 1}}\n")
    r = cli("plan", str(path), "--summary")
    assert r.code == 0
    assert r.out.splitlines()[:2] == [
        "batch big: 200000 requests",
        "endpoint https://vod.cn-shanghai.aliyuncs.com, at most 30 calls/s: about 1 h 51 min at full rate",
    ]


def test_plan_invalid_prints_nothing_on_stdout(cli: CliRunner) -> None:
    """An invalid manifest (even one whose only fault is deep in an ID file): exit 2, stdout empty."""
    r = cli("plan", str(INVALID / "id-files.yaml"), "--format", "jsonl")
    assert r.code == 2 and r.out == ""
    assert "bad-ids.txt:2:1" in r.err


def test_plan_endpoint_and_region_precedence(cli: CliRunner) -> None:
    """--endpoint > manifest endpoint > region; cn-hangzhou maps to the cn-shanghai endpoint; a malformed
    region is refused before it can become an unreachable host name."""
    r = cli("plan", EXAMPLE, "--summary", "--region", "cn-hangzhou")
    assert "endpoint https://vod.cn-shanghai.aliyuncs.com," in r.out
    r = cli("plan", EXAMPLE, "--summary", env={"ALIBABA_CLOUD_REGION_ID": "eu-central-1"})
    assert "endpoint https://vod.cn-shanghai.aliyuncs.com," in r.out  # the manifest's region wins over the env
    r = cli("plan", EXAMPLE, "--summary", "--endpoint", "http://example.com")
    assert r.code == 2 and "plain http://" in r.err
    r = cli("plan", EXAMPLE, "--summary", "--region", "Shanghai")
    assert r.code == 2 and "--region 'Shanghai' is not a region ID" in r.err, r.err


def test_region_check_is_the_schemas() -> None:
    """--region and ALIBABA_CLOUD_REGION_ID are checked with the same pattern the schema gives `region`."""
    from snapbatch.manifest.load import schema
    from snapbatch.vod.endpoint import _REGION

    assert f"^{_REGION.pattern}$" == schema()["properties"]["region"]["pattern"]


def test_version_and_help_everywhere(cli: CliRunner) -> None:
    """--version prints the version; every command has --help with examples."""
    from snapbatch import __version__
    from snapbatch.cli.main import COMMANDS

    r = cli("--version")
    assert (r.code, r.out) == (0, f"snapbatch {__version__}\n")
    for command in COMMANDS:
        r = cli(command, "--help")
        assert r.code == 0 and r.out.startswith(f"usage: snapbatch {command}")
        assert "examples:" in r.out, command


def test_usage_error_exit_2(cli: CliRunner) -> None:
    """An unknown flag or command: exit 2 and the usage on stderr."""
    r = cli("plan", EXAMPLE, "--format", "xml")
    assert r.code == 2 and "invalid choice: 'xml'" in r.err and r.out == ""
    r = cli("frobnicate")
    assert r.code == 2 and "invalid choice" in r.err


def test_console_script_installed() -> None:
    """The installed `snapbatch` console script runs (one subprocess test)."""
    from snapbatch import __version__

    exe = Path(sys.executable).parent / "snapbatch"
    command = [str(exe)] if exe.exists() else ["snapbatch"]
    done = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert done.stdout.strip() == f"snapbatch {__version__}"
