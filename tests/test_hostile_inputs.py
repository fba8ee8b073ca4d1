"""Hostile or careless input: URLs, special files, nested ${...}, huge numbers and text, tiny rates.

(The located errors of bad manifests are pinned by the corpus in tests/manifests/invalid/.)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from snapbatch.errors import ManifestError
from snapbatch.manifest.expand import expand
from snapbatch.manifest.ids import MAX_LINE_CHARS
from snapbatch.manifest.load import load_manifest
from snapbatch.report import duration
from snapbatch.run.limiter import RateWindow
from tests.conftest import CliRunner

HEAD = "version: 1\nbatch: hostile\n"


def _manifest(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.attacker.example", "plain http:// to a remote host"),
        ("http://127.0.0.1.nip.io:8080", "plain http:// to a remote host"),
        ("http://0x7f.0.0.1", "plain http:// to a remote host"),
        ("http://[::ffff:10.0.0.1]", "plain http:// to a remote host"),
        ("https://vod.cn-shanghai.aliyuncs.com:99999", "is not a well-formed URL (Port out of range"),
        ("https://vod.cn-shanghai.aliyuncs.com:https", "is not a well-formed URL"),
        ("http://[::1", "is not a well-formed URL"),
        ("http://127.0.0.1:0", "has an empty or zero port"),
        ("https://vod .example.com", "contains a space or a control character"),
        ("https://vod.example.com\x1b[2J", "contains a space or a control character"),
        ("https://user:secret@vod.example.com", "carries a user name or password"),
        ("https://", "has no host"),
    ],
)
def test_malformed_or_remote_plain_http_endpoints_are_usage_errors(cli: CliRunner, url: str, words: str) -> None:
    """A malformed --endpoint, or plain http to anything but a loopback *address* (judged on the parsed IP,
    not on how the text starts): exit 2 with what is wrong, never a traceback, nothing raw echoed."""
    example = str(Path(__file__).parent.parent / "jobs.example.yaml")
    r = cli("plan", example, "--summary", "--endpoint", url)
    assert r.code == 2, r.err
    assert words in r.err and "Traceback" not in r.err and "\x1b" not in r.err


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://127.255.0.9", "http://[::1]:9", "http://localhost:80"]
)
def test_loopback_addresses_may_use_plain_http(cli: CliRunner, url: str) -> None:
    """127.0.0.0/8, ::1 and localhost are loopback: plain http is allowed there, for the emulator."""
    example = str(Path(__file__).parent.parent / "jobs.example.yaml")
    r = cli("plan", example, "--summary", "--endpoint", url)
    assert r.code == 0 and f"endpoint {url}," in r.out, r.err


def test_nested_defaults_are_expanded_only_when_taken(tmp_path: Path) -> None:
    """${A:-${B}} takes B when A is unset (and B unset is then an error); with A set, B is not needed;
    defaults nest to any depth. Nothing is ever sent with a ${ left in it."""
    path = _manifest(
        tmp_path,
        'defaults: {Count: 1, UserData: {Extend: "${SB_A:-${SB_B}}|${SB_A:-${SB_C:-deep}}|$${SB_A}"}}\n'
        "jobs: [{name: a, videos: [v-0001]}]\n",
    )
    taken = next(expand(load_manifest(path, {"SB_B": "bee"})))
    assert taken.params["UserData"] == '{"Extend":"bee|deep|${SB_A}"}'
    not_taken = next(expand(load_manifest(path, {"SB_A": "ay"})))
    assert not_taken.params["UserData"] == '{"Extend":"ay|ay|${SB_A}"}'
    with pytest.raises(ManifestError, match="environment variable SB_B is not set"):
        load_manifest(path, {})


def test_a_fifo_as_id_file_is_refused_at_once(tmp_path: Path) -> None:
    """A named pipe as ID file is refused without opening it for a read that would block forever."""
    os.mkfifo(tmp_path / "ids.fifo")
    path = _manifest(tmp_path, "defaults: {Count: 1}\njobs: [{name: a, videos: {file: ids.fifo}}]\n")
    caught: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(caught, path), daemon=True)
    worker.start()
    worker.join(60)  # a bound for a hang, not a timing assertion: the refusal takes microseconds
    assert not worker.is_alive(), "load_manifest blocked on the FIFO"
    assert isinstance(caught[0], ManifestError)
    assert "ID file" in str(caught[0]) and "is a FIFO (named pipe), not a regular file" in str(caught[0])


def _catch(caught: list[BaseException], path: Path) -> None:
    try:
        load_manifest(path, {})
    except BaseException as exc:
        caught.append(exc)


@pytest.mark.parametrize("target", ["/dev/zero", "."])
def test_a_manifest_that_is_a_device_or_a_directory_is_refused(cli: CliRunner, tmp_path: Path, target: str) -> None:
    """`validate /dev/zero` or a directory: exit 2 at once, saying what it is, not a read that never ends."""
    r = cli("validate", str(tmp_path / target) if target == "." else target)
    assert r.code == 2
    assert ("is a device" if target == "/dev/zero" else "is a directory") in r.err


def test_an_overlong_line_in_an_id_file_is_an_error_at_its_line(tmp_path: Path) -> None:
    """A line longer than MAX_LINE_CHARS (a binary or a file without line ends) is an error at FILE:LINE,
    found without reading the line whole; the same for a CSV file."""
    (tmp_path / "ids.txt").write_text("v-0001\n" + "x" * (MAX_LINE_CHARS * 3) + "\nv-0002\n")
    (tmp_path / "ids.csv").write_text("Id\nref-000001\n" + "y" * (MAX_LINE_CHARS + 1))
    path = _manifest(
        tmp_path,
        "defaults: {Count: 1}\njobs:\n  - {name: a, videos: {file: ids.txt}}\n"
        "  - {name: b, reference_ids: {file: ids.csv, column: Id}}\n",
    )
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, {})
    lines = [p.format() for p in caught.value.problems]
    assert lines[0].startswith(f"{tmp_path / 'ids.txt'}:2:1: jobs[0].videos.file: this line is over 65536 characters")
    assert lines[1].startswith(f"{tmp_path / 'ids.csv'}:3:1: jobs[1].reference_ids.file: this line is over")
    assert len(lines) == 2


def test_long_user_text_is_shortened_and_escaped_in_messages(cli: CliRunner, tmp_path: Path) -> None:
    """A 100 KB batch name with a bidi override is echoed shortened, with the override escaped."""
    name = "\u202e" + "b" * 100_000
    path = tmp_path / "m.yaml"
    path.write_text(f"version: 1\nbatch: {name}\njobs: [{{name: a, videos: [v-0001], params: {{Count: 1}}}}]\n")
    r = cli("validate", str(path))
    assert r.code == 2
    assert len(r.err) < 2000, len(r.err)
    assert "(100001 characters) must be 1-64 characters" in r.err
    assert "\u202e" not in r.err and "\\u202e" in r.err


def test_a_huge_unknown_key_is_not_echoed_whole(cli: CliRunner, tmp_path: Path) -> None:
    """A 100 KB mapping key (unknown, so named in the message and in its location) is shortened in both."""
    path = _manifest(tmp_path, f"defaults:\n  ? {'k' * 100_000}\n  : 1\njobs: [{{name: a, videos: [v-0001]}}]\n")
    r = cli("validate", str(path))
    assert r.code == 2 and "unknown key 'kkkk" in r.err and "(100000 characters)" in r.err
    assert len(r.err) < 1000, len(r.err)


def test_plan_text_output_escapes_control_and_bidi_characters(cli: CliRunner, tmp_path: Path) -> None:
    """An Extend holding a terminal escape and a bidi override: `plan` text shows them escaped (the JSONL
    output and the request itself keep them exactly)."""
    path = _manifest(
        tmp_path,
        'defaults: {SnapshotTemplateId: "tpl\\e[31m", UserData: {Extend: "\\e[2J\\u202Eevil"}}\n'
        "jobs: [{name: a, videos: [v-0001]}]\n",
    )
    text = cli("plan", str(path))
    assert text.code == 0, text.err
    assert "\x1b" not in text.out and "\u202e" not in text.out
    assert "SnapshotTemplateId=tpl\\x1b[31m" in text.out
    assert '{"Extend":"\\u001b[2J\\u202eevil"}' in text.out
    jsonl = cli("plan", str(path), "--format", "jsonl")
    assert "\\u001b[2J\u202eevil" in jsonl.out  # JSON escapes the one, keeps the other as it is


@pytest.mark.parametrize("command", ["run", "plan", "emulator"])
def test_a_tiny_qps_on_the_command_line_is_refused(cli: CliRunner, command: str) -> None:
    """--qps 1e-320 (or anything under 0.01 calls/s) is a usage error for run, plan and the emulator."""
    example = str(Path(__file__).parent.parent / "jobs.example.yaml")
    args = [command] + ([example] if command != "emulator" else []) + ["--qps", "1e-320"]
    r = cli(*args)
    assert r.code == 2 and "must be at least 0.01" in r.err, r.err


def test_the_limiter_refuses_a_rate_under_the_floor() -> None:
    """A library caller cannot build a limiter that would never admit a call."""
    with pytest.raises(ValueError, match=r"at least 0\.01"):
        RateWindow(1e-320)
    assert RateWindow(0.01).next_slot(0.0) == 0.0


def test_durations_never_overflow() -> None:
    """Any duration, however huge (or infinite, from a rate near zero), reads as text, never an OverflowError."""
    assert duration(float("inf")) == duration(1e300) == duration(float("nan")) == "over 100 years"
    assert duration(1_000_000 / 0.01) == "1157 d 9 h"


def test_plan_at_the_slowest_rate(cli: CliRunner, tmp_path: Path) -> None:
    """The slowest rate allowed still plans: a duration in days, no crash."""
    (tmp_path / "ids.txt").write_text("".join(f"v-{i:06d}\n" for i in range(5000)))
    path = _manifest(tmp_path, "qps: 0.01\ndefaults: {Count: 1}\njobs: [{name: a, videos: {file: ids.txt}}]\n")
    r = cli("plan", str(path), "--summary")
    assert r.code == 0 and "about 5 d 18 h at full rate" in r.out, r.out + r.err
