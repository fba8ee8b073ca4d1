"""The lean transport against scripted loopback servers: framing, keep-alive, errors mapped for the client."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
import httpx
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from snapbatch.emulator import DROP_AFTER, EmulatorConfig
from snapbatch.models import ACCEPTED, IN_DOUBT, TRANSIENT
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.transport import LeanTransport
from tests.emulated import AK_ID, AK_SECRET, running

Answer = Callable[[int], bytes]  # connection-local request number -> raw answer (b"": close; CLOSE: send, close)
CLOSE = b"<close>"


async def _exchange_all(answer: Answer, requests: int) -> tuple[list[httpx.Response | str], int]:
    """Serve ``answer`` on loopback, send ``requests`` GETs through a LeanTransport, count connections."""
    connections = 0

    async def handle(stream: anyio.abc.SocketStream) -> None:
        nonlocal connections
        connections += 1
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            number = 0
            while True:
                try:
                    await reader.receive_until(b"\r\n\r\n", 65536)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return
                data = answer(number)
                number += 1
                if not data:
                    return
                await stream.send(data.removesuffix(CLOSE))
                if data.endswith(CLOSE):
                    return

    results: list[httpx.Response | str] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with httpx.AsyncClient(transport=LeanTransport(max_connections=2), timeout=5) as client:
            for _ in range(requests):
                try:
                    results.append(await client.get(f"http://127.0.0.1:{port}/x"))
                except httpx.TransportError as exc:
                    results.append(type(exc).__name__)
        tg.cancel_scope.cancel()
    return results, connections


def _run(answer: Answer, requests: int) -> tuple[list[httpx.Response | str], int]:
    return anyio.run(_exchange_all, answer, requests)


def test_content_length_answers_reuse_one_connection() -> None:
    """Content-Length framing: three answers over one kept-alive connection."""
    results, connections = _run(lambda n: b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"n":%d}' % n, 3)
    assert [r.json() for r in results if isinstance(r, httpx.Response)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert connections == 1


def test_chunked_answers_are_reassembled() -> None:
    """Chunked framing, with a chunk extension and a trailer."""
    body = b'5;ext=1\r\n{"a":\r\n3\r\n42}\r\n0\r\nX-Trailer: t\r\n\r\n'
    results, connections = _run(lambda n: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body, 2)
    assert [r.json() for r in results if isinstance(r, httpx.Response)] == [{"a": 42}, {"a": 42}]
    assert connections == 1


def test_connection_close_and_unframed_answers_open_a_new_connection() -> None:
    """`Connection: close`, or no framing at all (read to the end): each answer gets a connection of its own."""
    results, connections = _run(lambda n: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}" + CLOSE, 2)
    assert [r.status_code for r in results if isinstance(r, httpx.Response)] == [200, 200]
    assert connections == 2


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", "RemoteProtocolError"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort" + CLOSE, "RemoteProtocolError"),
        (b"SMTP ready\r\n\r\n", "RemoteProtocolError"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "RemoteProtocolError"),
    ],
)
def test_broken_answers_raise_what_the_client_classifies_as_in_doubt(answer: bytes, error: str) -> None:
    """No answer, a cut body, not HTTP, a malformed header: RemoteProtocolError (the request was sent)."""
    results, _ = _run(lambda n: answer, 1)
    assert results == [error]


@pytest.mark.parametrize("lean", [True, False], ids=["lean transport", "httpx's own transport"])
def test_both_transports_classify_the_same(lean: bool) -> None:
    """The lean transport and httpx's own (used behind a proxy) give the same outcomes."""

    async def go(url: str) -> list[str]:
        async with VodClient(url, Credentials(AK_ID, AK_SECRET), lean=lean) as client:
            return [(await client.submit({"VideoId": "v", "Count": "1"})).kind for _ in range(2)]

    with running() as emu:
        assert anyio.run(go, emu.url) == [ACCEPTED, ACCEPTED]
    with running(EmulatorConfig(faults={DROP_AFTER: 1.0})) as emu:
        assert anyio.run(go, emu.url) == [IN_DOUBT, IN_DOUBT]
        assert len(emu.emulator.jobs) == 2
    closed = anyio.run(go, "http://127.0.0.1:9")  # the discard port: nothing listens
    assert closed == [TRANSIENT, TRANSIENT]


def test_compressed_answers_are_decoded() -> None:
    """snapbatch asks for identity, but a gzip answer from a gateway that ignores that still decodes."""
    import gzip

    body = gzip.compress(b'{"RequestId":"r"}')
    results, _ = _run(
        lambda n: b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), 1
    )
    assert [r.json() for r in results if isinstance(r, httpx.Response)] == [{"RequestId": "r"}]
