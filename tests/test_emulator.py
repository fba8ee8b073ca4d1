"""The emulator on its own: the per-second window on its clock, known videos, malformed HTTP."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio

from snapbatch.emulator import Emulator, EmulatorConfig, load_videos, rate_at_server, serve
from snapbatch.models import ACCEPTED, FAILED, THROTTLED, OutcomeKind
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.emulated import AK_ID, AK_SECRET, running


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


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_malformed_http_answered_and_server_keeps_serving() -> None:
    """Garbage, a huge head, no Host, a bad or too big Content-Length, chunked bodies: 4xx or a closed
    connection; the next well-formed call still succeeds."""
    with running() as emu:
        assert _raw(emu.port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert _raw(emu.port, b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431")
        assert _raw(emu.port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")  # HTTP/1.1 needs a Host
        assert _raw(emu.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n").startswith(b"HTTP/1.1 400")
        too_big = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"
        assert _raw(emu.port, too_big).startswith(b"HTTP/1.1 400")
        chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert _raw(emu.port, chunked).startswith(b"HTTP/1.1 411")
        assert _raw(emu.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort") == b""
        unsigned = _raw(emu.port, b"POST /?Action=SubmitSnapshotJob HTTP/1.1\r\nHost: x\r\n\r\n")
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


def test_form_body_is_signed() -> None:
    """Parameters in a form body (what snapbatch sends) count like query parameters, and the body is under
    the signature: the same signed request with its body changed, or its parameters moved to the query
    string, is refused."""
    import httpx

    seen: list[dict[str, object]] = []
    with running() as emu, httpx.Client() as http:
        emu.emulator.observers.append(seen.append)
        client = VodClient(emu.url, Credentials(AK_ID, AK_SECRET))

        def send(body: bytes | None = None, query: bytes = b"") -> dict[str, str]:
            signed = client.signed_request("SubmitSnapshotJob", {"VideoId": "vid-1", "Count": "3"})
            headers = {k: v for k, v in signed.headers.items() if k != "content-length"}
            content = signed.content if body is None else body
            return dict(http.post(httpx.URL(emu.url + "/", query=query), content=content, headers=headers).json())

        accepted = send()
        tampered = send(body=b"Count=9&VideoId=vid-1")
        moved = send(body=b"", query=b"Count=3&VideoId=vid-1")
    assert "SnapshotJob" in accepted, accepted
    assert seen[0]["params"] == {"VideoId": "vid-1", "Count": "3"}
    assert tampered["Code"] == moved["Code"] == "SignatureDoesNotMatch", (tampered, moved)


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
