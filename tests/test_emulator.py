"""The emulator on its own: the per-second window on its clock, known videos, malformed HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from snapbatch.emulator import Emulator, EmulatorConfig, load_videos, rate_at_server, serve
from snapbatch.models import ACCEPTED, FAILED, THROTTLED, OutcomeKind
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.conftest import CliRunner
from tests.emulated import AK_ID, AK_SECRET, raw_exchange, running
from tests.test_run import ENV


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_counts_per_key_and_slides() -> None:
    """qps calls in a second pass, the next is Throttling.User; a second later the window has slid."""
    clock = FakeClock()
    config = EmulatorConfig(credentials={AK_ID: (AK_SECRET, None), "other": ("s2", None)}, qps=3)
    emulator = Emulator(config, mono=clock)

    async def go() -> list[OutcomeKind]:
        kinds = []
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, emulator)
            url = f"http://127.0.0.1:{port}"
            async with (
                VodClient(url, Credentials(AK_ID, AK_SECRET)) as mine,
                VodClient(url, Credentials("other", "s2")) as theirs,
            ):
                for step in (0.0, 0.2, 0.4, 0.6, 0.999, 1.0, 1.2):
                    clock.now = 1000.0 + step
                    kinds.append((await mine.submit({"VideoId": "v", "Count": "1"})).kind)
                kinds.append((await theirs.submit({"VideoId": "v", "Count": "1"})).kind)
            tg.cancel_scope.cancel()
        return kinds

    assert anyio.run(go) == [ACCEPTED, ACCEPTED, ACCEPTED, THROTTLED, THROTTLED, ACCEPTED, ACCEPTED, ACCEPTED]


def test_known_videos_and_reference_ids(tmp_path: Path) -> None:
    """With --videos, only listed VideoIds, and ReferenceIds mapped to a listed video, exist."""
    path = tmp_path / "videos.txt"
    path.write_text("# known videos\nvid-1\nvid-2,ref-000002\n\n")
    videos = load_videos(path)
    assert videos == {"vid-1": None, "vid-2": "ref-000002"}

    async def go(url: str) -> list[tuple[OutcomeKind, str | None]]:
        async with VodClient(url, Credentials(AK_ID, AK_SECRET)) as client:
            out: list[tuple[OutcomeKind, str | None]] = []
            for params in (
                {"VideoId": "vid-1"},
                {"ReferenceId": "ref-000002"},
                {"VideoId": "vid-3"},
                {"ReferenceId": "ref-000003"},
            ):
                o = await client.submit({**params, "Count": "1"})
                out.append((o.kind, o.code))
            return out

    with running(EmulatorConfig(videos=videos)) as emu:
        result = anyio.run(go, emu.url)
        assert [job["video"] for job in emu.emulator.jobs.values()] == ["vid-1", "vid-2"]
    assert result == [
        (ACCEPTED, None),
        (ACCEPTED, None),
        (FAILED, "InvalidVideo.NotFound"),
        (FAILED, "InvalidVideo.NotFound"),
    ]


def test_malformed_http_answered_and_server_keeps_serving() -> None:
    """Garbage, a huge head, no Host, a bad or too big Content-Length, chunked bodies: 4xx or a closed
    connection; the next well-formed call still succeeds."""
    with running() as emu:
        assert raw_exchange(emu.port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert raw_exchange(emu.port, b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431")
        assert raw_exchange(emu.port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")  # HTTP/1.1 needs a Host
        negative = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"
        assert raw_exchange(emu.port, negative).startswith(b"HTTP/1.1 400")
        too_big = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"
        assert raw_exchange(emu.port, too_big).startswith(b"HTTP/1.1 400")
        chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert raw_exchange(emu.port, chunked).startswith(b"HTTP/1.1 411")
        assert raw_exchange(emu.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort") == b""
        unsigned = raw_exchange(emu.port, b"POST /?Action=SubmitSnapshotJob HTTP/1.1\r\nHost: x\r\n\r\n")
        assert unsigned.startswith(b"HTTP/1.1 400") and b'"Code":"MissingParameter"' in unsigned

        async def go() -> str:
            async with VodClient(emu.url, Credentials(AK_ID, AK_SECRET)) as client:
                return (await client.submit({"VideoId": "v", "Count": "1"})).kind

        assert anyio.run(go) == ACCEPTED


def test_rate_at_server_counts_the_busiest_window() -> None:
    """The busiest 1-second window of a log, from the emulator's own arrival times."""
    calls = [{"mono": t} for t in (0.0, 0.5, 0.99, 1.0, 1.5, 1.98, 1.99)]
    assert rate_at_server(calls) == 4  # 1.0, 1.5, 1.98, 1.99
    assert rate_at_server([]) == 0


def test_emulator_command_serves_and_logs(tmp_path: Path) -> None:
    """`snapbatch emulator` (the installed script, in a subprocess) prints where it listens and which key it
    takes, serves signed calls and logs them as JSON lines without the secret."""
    import json
    import re
    import shutil
    import subprocess
    import sys

    from snapbatch.cli.main import EMULATOR_KEY_ID, EMULATOR_KEY_SECRET

    exe = shutil.which("snapbatch") or str(Path(sys.executable).parent / "snapbatch")
    log = tmp_path / "calls.jsonl"
    proc = subprocess.Popen([exe, "emulator", "--log", str(log), "--qps", "5"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        match = re.fullmatch(r"snapbatch emulator listening on (http://127\.0\.0\.1:\d+)\n", first)
        assert match, first
        assert second.startswith(f"accepting AccessKeyId {EMULATOR_KEY_ID} with secret {EMULATOR_KEY_SECRET}")

        async def go() -> str:
            async with VodClient(match.group(1), Credentials(EMULATOR_KEY_ID, EMULATOR_KEY_SECRET)) as client:
                return (await client.submit({"VideoId": "v-1", "Count": "1"})).kind

        assert anyio.run(go) == ACCEPTED
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["outcome"] == "accepted" and entry["params"] == {"VideoId": "v-1", "Count": "1"}
    assert EMULATOR_KEY_SECRET not in log.read_text()


def _form_body_request(url: str, params: dict[str, str], nonce: str) -> tuple[dict[str, str], bytes]:
    """A correctly V3-signed request carrying ``params`` as a form body (what no official VOD SDK sends)."""
    import hashlib
    from urllib.parse import urlencode, urlsplit

    from snapbatch.vod.signing import iso_timestamp, sign_v3

    body = urlencode(sorted(params.items())).encode()
    headers = {
        "host": urlsplit(url).netloc,
        "x-acs-action": "SubmitSnapshotJob",
        "x-acs-version": "2017-03-21",
        "x-acs-date": iso_timestamp(datetime.now(UTC)),
        "x-acs-signature-nonce": nonce,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    headers["authorization"] = sign_v3(
        method="POST",
        path="/",
        query={},
        headers=headers,
        payload_sha256=headers["x-acs-content-sha256"],
        access_key_id=AK_ID,
        secret=AK_SECRET,
    )
    return {**headers, "content-type": "application/x-www-form-urlencoded"}, body


@pytest.mark.parametrize("query_only", [False, True], ids=["form bodies read", "query only"])
def test_query_only_mode_ignores_form_body_parameters(query_only: bool) -> None:
    """By default a signed form body's parameters count like query parameters; in query-only mode (a gateway
    that reads only the query) the same request lacks them (MissingParameter) and makes no job. The body
    stays under the signature either way: changing it is SignatureDoesNotMatch."""
    import httpx

    params = {"VideoId": "vid-1", "Count": "3"}
    with running(query_only=query_only) as emu, httpx.Client() as http:
        headers, body = _form_body_request(emu.url, params, "nonce-1")
        answer = http.post(emu.url + "/", content=body, headers=headers).json()
        headers, _ = _form_body_request(emu.url, params, "nonce-2")
        tampered = http.post(emu.url + "/", content=b"Count=9&VideoId=vid-1", headers=headers).json()
        jobs = len(emu.emulator.jobs)
    if query_only:
        assert answer["Code"] == "MissingParameter" and jobs == 0, answer
    else:
        assert "SnapshotJob" in answer and jobs == 1, answer
    assert tampered["Code"] == "SignatureDoesNotMatch", tampered


def test_mixed_batch_is_fully_accepted_in_query_only_mode(cli: CliRunner, tmp_path: Path) -> None:
    """A batch mixing every kind of parameter (offsets, a sprite, UserData with a callback and non-ASCII
    Extend, ReferenceIds, templates) through `snapbatch run` against a query-only emulator: every call is
    accepted, and the emulator read exactly the parameters `plan` shows."""
    (tmp_path / "ids.txt").write_text("d3e680e618708efbf2cae7cc93120001\n7a1c0d4e2b3f4a5b8c9d0e1f2a3b0002\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        """version: 1
batch: mixed
defaults:
  UserData:
    MessageCallback: {CallbackURL: "https://hooks.example.com/vod?x=1&y=a%20b+c"}
    Extend: {campaign: "автомн 秋 🎬 *~+&=%/"}
templates:
  poster: {SnapshotTemplateId: f5b228fe693bf55bd87b789abcd}
  thumbs: {Width: 1280, Height: 720, Count: 10, Interval: 0}
  points: {SpecifiedOffsetTimes: [0, 1500, 30000], Count: 3, Width: 640}
sprites:
  scrubber: {CellWidth: 120, CellHeight: 68, Columns: 10, Lines: 10, KeepCellPic: delete, Color: tomato}
jobs:
  - name: posters
    videos: {file: ids.txt}
    template: poster
  - name: by-id
    videos: {file: ids.txt}
    template: [thumbs, points]
    sprite: scrubber
  - name: by-reference
    reference_ids: [partner_0001, partner-0002]
    params: {Count: 3, Interval: 5, SpecifiedOffsetTime: 2000}
"""
    )
    plan = [json.loads(line) for line in cli("plan", str(manifest), "--format", "jsonl").out.splitlines()]
    with running(EmulatorConfig(qps=1000)) as emu:
        assert emu.emulator.config.query_only
        result = cli("run", str(manifest), "--endpoint", emu.url, "--json", env=ENV)
        calls = emu.emulator.calls
    assert result.code == 0, result.err
    assert json.loads(result.out)["submitted"] == len(plan) == len(calls) == 8
    assert all(call["outcome"] == "accepted" for call in calls)
    assert sorted(json.dumps(c["params"], sort_keys=True) for c in calls) == sorted(
        json.dumps(p["params"], sort_keys=True) for p in plan
    )


def test_path_jitter_delays_a_request_before_it_counts() -> None:
    """With path_jitter_ms, each request is held a random 0..J ms (from the seeded generator) before the
    emulator sees it, like a network path; it is then handled as usual."""
    import random
    import time

    seed, jitter_ms = 11, 400.0
    expected_s = random.Random(seed).uniform(0, jitter_ms) / 1000  # the first draw of the emulator's generator

    async def go(url: str) -> tuple[float, str]:
        async with VodClient(url, Credentials(AK_ID, AK_SECRET)) as client:
            sent = time.monotonic()
            return sent, (await client.submit({"VideoId": "v", "Count": "1"})).kind

    with running(EmulatorConfig(path_jitter_ms=jitter_ms, seed=seed)) as emu:
        sent, kind = anyio.run(go, emu.url)
        (entry,) = emu.emulator.calls
    assert kind == ACCEPTED
    assert expected_s > 0.05 and entry["mono"] - sent >= expected_s


def test_a_timestamp_out_of_range_is_refused_as_malformed() -> None:
    """A Timestamp shaped right but naming month 13 is InvalidTimeStamp.Format, an answer, not a crash."""
    from urllib.parse import urlencode

    from snapbatch.vod.signing import sign_v1

    emulator = Emulator(EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}))
    params = {
        "Action": "SubmitSnapshotJob",
        "Version": "2017-03-21",
        "AccessKeyId": AK_ID,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": "nonce-1",
        "Timestamp": "2026-13-45T10:00:00Z",
        "VideoId": "v",
        "Count": "1",
    }
    params["Signature"] = sign_v1("GET", params, AK_SECRET)
    reply = emulator.handle("GET", "/?" + urlencode(params), {"host": "x"}, b"")
    assert (reply.status, reply.body["Code"]) == (400, "InvalidTimeStamp.Format")
