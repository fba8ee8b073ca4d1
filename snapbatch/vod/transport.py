"""A lean httpx transport: HTTP/1.1 keep-alive over anyio sockets, just what VOD's RPC API needs.

httpcore's general pool spends most of a call's CPU on bookkeeping (assigning requests to connections,
polling idle sockets, per-request stream attributes); at thousands of calls that outweighs everything else
snapbatch does. This transport keeps a LIFO stack of idle connections per origin and speaks only
request-with-Content-Length / response-with-Content-Length-or-chunked. Errors are raised as the httpx
exceptions the client classifies: ConnectError/ConnectTimeout (nothing sent), WriteError, ReadTimeout,
ReadError, RemoteProtocolError (sent; the answer may be lost).
"""

from __future__ import annotations

import contextlib
import select
import ssl
import time
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.abc
import anyio.streams.tls
import httpx
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["LeanTransport"]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
_PROBE_IDLE_S = 1.0  # reuse a connection idle longer than this only after checking the server kept it open


class _Connection:
    def __init__(self, stream: anyio.abc.ByteStream, raw: Any) -> None:
        self.stream = stream
        self.reader = BufferedByteReceiveStream(stream)
        self.raw = raw  # the socket, to check an idle connection without reading from it
        self.idle_since = time.monotonic()

    def looks_alive(self) -> bool:
        if time.monotonic() - self.idle_since < _PROBE_IDLE_S or self.raw is None:
            return True
        poller = select.poll()
        poller.register(self.raw, select.POLLIN)
        return not poller.poll(0)  # readable while idle means the server closed it (or sent junk)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.stream.aclose()


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int = 64, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._slots = anyio.Semaphore(max_connections)
        self._ssl = ssl_context or ssl.create_default_context()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout", {})
        async with self._slots:
            connection = await self._reuse(origin)
            if connection is None:
                connection = await self._connect(origin, timeouts.get("connect"), request)
            try:
                status, headers, body, keep = await self._exchange(connection, request, timeouts)
            except BaseException:
                await connection.aclose()
                raise
            if keep:
                connection.idle_since = time.monotonic()
                self._idle.setdefault(origin, []).append(connection)
            else:
                await connection.aclose()
        return httpx.Response(status, headers=headers, content=body, request=request)

    async def _reuse(self, origin: tuple[str, str, int]) -> _Connection | None:
        stack = self._idle.get(origin)
        while stack:
            connection = stack.pop()
            if connection.looks_alive():
                return connection
            await connection.aclose()
        return None

    async def _connect(
        self, origin: tuple[str, str, int], timeout: float | None, request: httpx.Request
    ) -> _Connection:
        scheme, host, port = origin
        try:
            with anyio.fail_after(timeout):
                tcp = await anyio.connect_tcp(host, port)
                if scheme != "https":
                    return _Connection(tcp, tcp.extra(anyio.abc.SocketAttribute.raw_socket))
                try:
                    tls = await anyio.streams.tls.TLSStream.wrap(
                        tcp, hostname=host, ssl_context=self._ssl, standard_compatible=False
                    )
                except BaseException:  # the handshake failed or was cut short: the socket must not leak
                    with anyio.CancelScope(shield=True):
                        await tcp.aclose()
                    raise
                return _Connection(tls, tcp.extra(anyio.abc.SocketAttribute.raw_socket))
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from None
        except (OSError, anyio.BrokenResourceError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}", request=request) from None

    async def _exchange(
        self, connection: _Connection, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        body = request.content
        target = request.url.raw_path
        head = [request.method.encode(), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            if name.lower() in (b"transfer-encoding", b"content-length"):
                continue
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        try:
            with anyio.fail_after(timeouts.get("write")):
                await connection.stream.send(b"".join(head) + body)
        except TimeoutError:
            raise httpx.WriteTimeout("sending the request timed out", request=request) from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpx.WriteError(f"sending the request failed: {exc}", request=request) from None
        try:
            with anyio.fail_after(timeouts.get("read")):
                return await self._read_response(connection.reader, request)
        except TimeoutError:
            raise httpx.ReadTimeout("no answer in time", request=request) from None
        except (anyio.IncompleteRead, anyio.EndOfStream):
            raise httpx.RemoteProtocolError(
                "the server closed the connection without a complete answer", request=request
            ) from None
        except anyio.DelimiterNotFound:
            raise httpx.RemoteProtocolError("the answer's head is too large", request=request) from None
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpx.ReadError(f"reading the answer failed: {exc}", request=request) from None

    async def _read_response(
        self, reader: BufferedByteReceiveStream, request: httpx.Request
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        head = await reader.receive_until(b"\r\n\r\n", MAX_HEAD_BYTES)
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}", request=request)
        status = int(parts[1])
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        keep = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise httpx.RemoteProtocolError("malformed header line in the answer", request=request)
            name, value = name.strip().lower(), value.strip()
            headers.append((name, value))
            if name == b"content-length" and value.isdigit():
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection":
                keep = value.lower() != b"close" if keep else value.lower() == b"keep-alive"
        if chunked:
            body = await self._read_chunked(reader)
        elif length is not None:
            if length > MAX_BODY_BYTES:
                raise httpx.RemoteProtocolError("the answer is too large", request=request)
            body = await reader.receive_exactly(length) if length else b""
        else:
            body, keep = await self._read_to_end(reader), False
        return status, headers, body, keep

    @staticmethod
    async def _read_chunked(reader: BufferedByteReceiveStream) -> bytes:
        pieces: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.receive_until(b"\r\n", 1024)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while await reader.receive_until(b"\r\n", MAX_HEAD_BYTES):  # trailers, up to the blank line
                    pass
                return b"".join(pieces)
            total += size
            if total > MAX_BODY_BYTES:
                raise anyio.DelimiterNotFound(MAX_BODY_BYTES)
            pieces.append(await reader.receive_exactly(size))
            await reader.receive_exactly(2)

    @staticmethod
    async def _read_to_end(reader: BufferedByteReceiveStream) -> bytes:
        pieces: list[bytes] = []
        total = 0
        while True:
            try:
                piece = await reader.receive()
            except anyio.EndOfStream:
                return b"".join(pieces)
            total += len(piece)
            if total > MAX_BODY_BYTES:
                raise anyio.DelimiterNotFound(MAX_BODY_BYTES)
            pieces.append(piece)

    async def aclose(self) -> None:
        idle: Iterable[list[_Connection]] = self._idle.values()
        for stack in idle:
            for connection in stack:
                await connection.aclose()
        self._idle.clear()
