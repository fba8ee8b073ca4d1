"""Every way an exchange can go wrong is an Outcome, never an exception: the real client on httpx's own
transport against scripted loopback servers that send exactly the bytes given, plain and over TLS."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import struct
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import pytest
import trustme
from anyio.from_thread import start_blocking_portal
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSListener, TLSStream

from snapbatch.models import ACCEPTED, IN_DOUBT, TRANSIENT, WRONG_ENDPOINT, Outcome
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.conftest import CliRunner
from tests.test_run import ENV, _manifest

GOOD = Credentials("LTAIscriptedKey", "scripted-secret")
JOB = b'{"RequestId":"r-1","SnapshotJob":{"JobId":"job-1"}}'
CLOSE, KEEP, RESET, ABORT_TLS = "close", "keep", "reset", "abort-tls"


def ok(body: bytes = JOB, *headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        b"".join(h + b"\r\n" for h in headers),
        body,
    )


@dataclass
class Scripted:
    url: str
    heads: list[bytes] = field(default_factory=list)  # the request heads the server read


@contextmanager
def scripted(answer: bytes, end: str = CLOSE, tls: ssl.SSLContext | None = None) -> Iterator[Scripted]:
    """A loopback server that reads each request head, sends ``answer`` byte for byte, then ends as told:
    close (FIN, and over TLS a close_notify first), keep (wait for the next request), reset (RST) or
    abort-tls (close the TCP connection under TLS without a close_notify)."""
    served = Scripted("")

    async def handle(stream: anyio.abc.ByteStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        try:
            while True:
                try:
                    served.heads.append(await reader.receive_until(b"\r\n\r\n", 65536))
                    await stream.send(answer)
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
                    return
                if end != KEEP:
                    break
            if end == RESET:
                raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif end == ABORT_TLS:
                assert isinstance(stream, TLSStream)
                await stream.transport_stream.aclose()
        finally:  # also when the server is stopped while a connection is open
            with anyio.CancelScope(shield=True), suppress(anyio.BrokenResourceError, OSError, ssl.SSLError):
                await stream.aclose()

    async def serve(*, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
        listener: anyio.abc.Listener[anyio.abc.ByteStream] = tcp
        if tls is not None:
            listener = TLSListener(tcp, tls, standard_compatible=True)
        async with listener:
            task_status.started(tcp.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(handle)

    with start_blocking_portal() as portal:
        future, port = portal.start_task(serve)
        served.url = f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}"
        try:
            yield served
        finally:
            future.cancel()


def submit(url: str, times: int = 1, tls: ssl.SSLContext | None = None) -> list[Outcome]:
    async def go() -> list[Outcome]:
        # A generous timeout: an answer the client could not frame would show up as a ReadTimeout (no HTTP
        # status), which the assertions on http_status tell apart from a prompt answer.
        async with VodClient(url, GOOD, timeout_s=20, tls=tls) as client:
            return [await client.submit({"VideoId": "v", "Count": "1"}) for _ in range(times)]

    return anyio.run(go)


@pytest.mark.parametrize(
    ("answer", "end", "error"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + JOB + b"\r\n0\r\n\r\n",
            KEEP,
            "RemoteProtocolError",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + JOB[:10], CLOSE, "RemoteProtocolError"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + JOB[:20], CLOSE, "RemoteProtocolError"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", KEEP, "RemoteProtocolError"),
        (b"SMTP ready\r\n\r\n", KEEP, "RemoteProtocolError"),
        (b"", CLOSE, "RemoteProtocolError"),
        (b"HTTP/1.1 102 Processing\r\n\r\n", CLOSE, "RemoteProtocolError"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            KEEP,
            "RemoteProtocolError",
        ),
        (b"", RESET, "ReadError"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + JOB[:20], RESET, "ReadError"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!", KEEP, "DecodingError"),
    ],
    ids=[
        "malformed chunk size",
        "chunked body cut short",
        "body shorter than its Content-Length",
        "malformed header line",
        "not HTTP",
        "closed without an answer",
        "only a 1xx, then closed",
        "101 to a request that proposed no upgrade",
        "reset without an answer",
        "reset mid-body",
        "undecodable gzip",
    ],
)
def test_broken_answers_are_in_doubt(answer: bytes, end: str, error: str) -> None:
    """Malformed framing, a cut body, a reset, a body that cannot be decoded: the request was sent and no
    usable answer came, so the call is in doubt (never an exception), with the transport's error named."""
    with scripted(answer, end) as served:
        (outcome,) = submit(served.url)
        assert len(served.heads) == 1
    assert outcome.kind == IN_DOUBT and outcome.http_status is None
    assert (outcome.message or "").startswith(error), outcome.message


def test_answer_framed_only_by_closing_is_in_doubt_unless_complete() -> None:
    """No Content-Length and no chunking: the body ends when the connection closes, so a cut-off one cannot
    be told from a whole one. A cut 400 error body is in doubt (not fatal); a whole JSON answer stands."""
    with scripted(b'HTTP/1.1 400 Bad Request\r\n\r\n{"Code":"Throttl', CLOSE) as served:
        (cut,) = submit(served.url)
    with scripted(b"HTTP/1.1 200 OK\r\n\r\n" + JOB, CLOSE) as served:
        (whole,) = submit(served.url)
    assert (cut.kind, cut.http_status) == (IN_DOUBT, 400) and "may be cut short" in (cut.message or "")
    assert (whole.kind, whole.job_id) == (ACCEPTED, "job-1")


@pytest.mark.parametrize(
    ("answer", "status", "kind"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, IN_DOUBT),
        (b"HTTP/1.1 304 Not Modified\r\n\r\n", 304, WRONG_ENDPOINT),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(), 200, ACCEPTED),
    ],
    ids=["204", "304", "100 then 200"],
)
def test_bodiless_and_informational_answers_are_classified_at_once(answer: bytes, status: int, kind: str) -> None:
    """204 and 304 carry no body and the server keeps the connection open: the client classifies them at
    once (an HTTP status, not a read timeout); a 304 is not an answer VOD's API gives, so the endpoint is
    wrong. A 100 before the real answer is skipped."""
    with scripted(answer, KEEP) as served:
        (outcome,) = submit(served.url)
    assert (outcome.kind, outcome.http_status) == (kind, status), outcome


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_is_a_wrong_endpoint_naming_where_it_points(status: int) -> None:
    """A redirect is not followed (a signed call must not go elsewhere) and is no verdict on the key: the
    outcome says the endpoint is wrong and names the Location."""
    answer = b"HTTP/1.1 %d Moved\r\nLocation: https://vod.elsewhere.example/\r\nContent-Length: 0\r\n\r\n" % status
    with scripted(answer, KEEP) as served:
        (outcome,) = submit(served.url)
        assert len(served.heads) == 1
    assert (outcome.kind, outcome.http_status) == (WRONG_ENDPOINT, status)
    assert "redirected to https://vod.elsewhere.example/" in (outcome.message or "")


def test_gzip_answer_is_decoded_and_connection_reused() -> None:
    """snapbatch asks for identity, but a gzip answer from a gateway that ignores that still decodes; a
    kept-alive connection carries the next calls."""
    body = gzip.compress(JOB)
    with scripted(ok(body, b"Content-Encoding: gzip"), KEEP) as served:
        outcomes = submit(served.url, times=3)
        assert len(served.heads) == 3
    assert [o.kind for o in outcomes] == [ACCEPTED] * 3


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _tls_pair(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + JOB[:20], None),
        (b"HTTP/1.1 200 OK\r\n\r\n" + JOB[:20], 200),
    ],
    ids=["Content-Length", "framed by closing"],
)
def test_truncated_tls_answer_is_in_doubt(ca: trustme.CA, answer: bytes, status: int | None) -> None:
    """Over TLS, a body cut off by the TCP connection closing without TLS's close_notify is never taken
    for a whole answer: in doubt."""
    server, client = _tls_pair(ca)
    with scripted(answer, ABORT_TLS, tls=server) as served:
        (outcome,) = submit(served.url, tls=client)
    assert (outcome.kind, outcome.http_status) == (IN_DOUBT, status), outcome


def test_whole_tls_answer_is_accepted(ca: trustme.CA) -> None:
    """The same scripted server over TLS with a whole answer: accepted (the TLS cases above fail for the
    cut, not for the TLS)."""
    server, client = _tls_pair(ca)
    with scripted(ok(), CLOSE, tls=server) as served:
        (outcome,) = submit(served.url, tls=client)
    assert (outcome.kind, outcome.job_id) == (ACCEPTED, "job-1")


def test_run_against_a_redirect_stops_as_a_wrong_endpoint(cli: CliRunner, tmp_path: Path) -> None:
    """`snapbatch run` at an endpoint that redirects: one call, then it stops with exit 5 (work left; not
    exit 4, the key is not to blame), the log naming where the redirect pointed; nothing is marked sent."""
    answer = (
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://vod.cn-beijing.aliyuncs.com/\r\nContent-Length: 0\r\n\r\n"
    )
    with scripted(answer, KEEP) as served:
        result = cli("run", str(_manifest(tmp_path, 5)), "--endpoint", served.url, "--json", env=ENV)
        calls = len(served.heads)
    assert result.code == 5, result.err
    assert calls == 1
    assert "not VOD's API" in result.err and "redirected to https://vod.cn-beijing.aliyuncs.com/" in result.err
    summary = json.loads(result.out)
    assert (summary["pending"], summary["submitted"], summary["stopped"]) == (5, 0, "wrong-endpoint")


@contextmanager
def connect_proxy() -> Iterator[Scripted]:
    """An HTTP CONNECT proxy on loopback that tunnels to whatever loopback port it is asked for, recording
    each CONNECT line in ``heads``."""
    served = Scripted("")

    async def pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
        with suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            async for chunk in source:
                await sink.send(chunk)
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await sink.aclose()

    async def handle(client: anyio.abc.SocketStream) -> None:
        async with client:
            reader = BufferedByteReceiveStream(client)
            head = await reader.receive_until(b"\r\n\r\n", 65536)
            served.heads.append(head.split(b"\r\n", 1)[0])
            host, _, port = head.split(b" ")[1].decode().rpartition(":")
            assert host in ("localhost", "127.0.0.1"), host  # loopback only, whatever is asked
            async with await anyio.connect_tcp("127.0.0.1", int(port)) as upstream:
                await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pipe, upstream, client)
                    await pipe(client, upstream)

    async def serve(*, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(handle)

    with start_blocking_portal() as portal:
        future, port = portal.start_task(serve)
        served.url = f"http://127.0.0.1:{port}"
        try:
            yield served
        finally:
            future.cancel()


def test_proxy_from_the_environment_with_the_same_trust_store(ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY in the environment carries the calls (a library caller gets it too, not just the CLI),
    and the TLS inside the tunnel is checked against the same trust store as a direct call: trusted, the
    call is accepted through the proxy; with the default store, the same call is refused at connect."""
    server, client = _tls_pair(ca)
    with scripted(ok(), KEEP, tls=server) as served, connect_proxy() as proxy:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        (trusted,) = submit(served.url, tls=client)
        (untrusted,) = submit(served.url)
        tunnels = list(proxy.heads)
    port = served.url.rsplit(":", 1)[1]
    assert (trusted.kind, trusted.job_id) == (ACCEPTED, "job-1")
    assert untrusted.kind == TRANSIENT and "CERTIFICATE_VERIFY_FAILED" in (untrusted.message or "")
    assert tunnels == [f"CONNECT localhost:{port} HTTP/1.1".encode()] * 2
