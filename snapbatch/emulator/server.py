"""The emulator's HTTP/1.1 server: h11 parses and frames, an asyncio protocol carries the bytes,
``Emulator.handle`` decides. Keeps connections alive, holds requests back by the path jitter and answers
by the latency the configuration asks for, serves HTTPS with an SSL context, and closes without an answer
when the service says to drop. A malformed request gets a plain-text 4xx and the connection is closed.

The bytes go through asyncio's protocol callbacks rather than anyio streams: a call with no delay to wait
for is read, handled and answered within one callback, where a stream costs a task wake-up, a checkpoint
and a selector registration each way; that was a third of the emulator's CPU a call. So it serves under
anyio's asyncio backend (the default, and what snapbatch runs on)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import deque

import anyio
import anyio.abc
import h11

from snapbatch.emulator.service import Emulator, Reply

__all__ = ["MAX_BODY_BYTES", "MAX_HEAD_BYTES", "serve"]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
# h11 measures an incomplete head between the pieces it is given: feeding it this much at a time makes a head
# over MAX_HEAD_BYTES (by at most one piece) a 431 rather than a head parsed in full. A request of this API
# fits in one piece.
_RECEIVE_BYTES = 4096
_READ_BYTES = 64 * 1024
_JSON = (b"content-type", b"application/json;charset=utf-8")
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps with options makes an encoder a call


class _Refused(Exception):
    """A request this server will not take: answer ``status`` with ``text`` and close."""

    def __init__(self, status: int, text: str) -> None:
        self.status, self.text = status, text


async def serve(
    emulator: Emulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``emulator`` until cancelled (HTTPS with ``ssl_context``); reports the bound port through
    ``task_status``."""
    # anyio binds (every address of the host, one port for all of them), asyncio serves the sockets
    tcp = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    bound = tcp.extra(anyio.abc.SocketAttribute.local_port)
    loop = asyncio.get_running_loop()
    live: set[_Connection] = set()
    servers = [
        await loop.create_server(
            lambda: _Connection(emulator, live),
            sock=listener.extra(anyio.abc.SocketAttribute.raw_socket),
            ssl=ssl_context,
        )
        for listener in tcp.listeners
    ]
    try:
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        for server in servers:
            server.close()
        for connection in list(live):
            connection.abort()


class _Connection(asyncio.BufferedProtocol):
    """One client connection: requests in order, one at a time (a pipelined one waits for the answer before)."""

    def __init__(self, emulator: Emulator, live: set[_Connection]) -> None:
        self.emulator, self.live = emulator, live
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.transport: asyncio.Transport | None = None
        self.unread: deque[bytes] = deque()  # received, not yet given to h11
        # asyncio reads into this one buffer rather than a new 256 KiB bytes object a read
        self.buffer = memoryview(bytearray(_READ_BYTES))
        self.at_eof = self.eof_given = False
        self.request: h11.Request | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.waiting: asyncio.Task[None] | None = None  # the jitter or latency of the request being answered
        self.writes_paused = False  # the client reads its answers slower than it sends requests
        self.closed = False

    # -- asyncio's callbacks ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.live.discard(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.unread.append(bytes(self.buffer[:nbytes]))
        self._advance()

    def pause_writing(self) -> None:
        # read no more requests until the client has taken its answers, as a stream's send would wait
        self.writes_paused = True
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writes_paused = False
        self._resume()

    def eof_received(self) -> bool:
        self.at_eof = True
        self._advance()
        # stay open to answer a request sent before a half-close (asyncio ignores this, with a warning, on TLS)
        return not self.closed and self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    # -- the requests -----------------------------------------------------------------------------------

    def abort(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _advance(self) -> None:
        """Take h11's events as far as the bytes received go, answering each whole request."""
        try:
            while not self.closed and self.waiting is None:
                event = self._next()
                if event is None:
                    return
                if isinstance(event, h11.Request):
                    self._start(event)
                elif isinstance(event, h11.Data):
                    self.body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self._answer()
                else:  # ConnectionClosed, or h11.PAUSED (cannot come before this cycle's answer): nothing more
                    self._close()
        except _Refused as refused:
            self._send_plain(refused.status, refused.text)

    def _next(self) -> h11.Event | None:
        """The next event, or None when it needs bytes not yet received."""
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError as exc:
                if self.http.their_state is h11.SEND_BODY or self.http.our_state is not h11.IDLE:
                    self._close()  # mid-body (a cut or overlong body): close without an answer
                    return None
                raise _Refused(exc.error_status_hint, "malformed request") from None
            if event is not h11.NEED_DATA:
                return event if isinstance(event, h11.Event) else h11.ConnectionClosed()  # PAUSED: stop here
            if self.unread:
                data = self.unread.popleft()
                if len(data) > _RECEIVE_BYTES:
                    data, rest = data[:_RECEIVE_BYTES], data[_RECEIVE_BYTES:]
                    self.unread.appendleft(rest)
                self.http.receive_data(data)
            elif self.at_eof and not self.eof_given:
                self.eof_given = True
                self.http.receive_data(b"")
            else:
                return None

    def _start(self, request: h11.Request) -> None:
        if not request.target.startswith(b"/"):
            raise _Refused(400, "malformed request")
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers}
        if "transfer-encoding" in headers:
            raise _Refused(411, "send Content-Length, not chunked")
        if int(headers.get("content-length", "0")) > MAX_BODY_BYTES:  # h11 checked it is a number
            raise _Refused(400, "bad Content-Length")
        self.request, self.headers, self.body = request, headers, bytearray()

    def _answer(self) -> None:
        request = self.request
        assert request is not None and self.transport is not None
        config = self.emulator.config
        method, target = request.method.decode("ascii"), request.target.decode("latin-1")
        if config.path_jitter_ms > 0 or config.latency_ms[1] > 0:
            self.transport.pause_reading()  # a pipelined request waits its turn, unread
            self.waiting = asyncio.get_running_loop().create_task(self._answer_later(method, target))
            return
        self._send(self.emulator.handle(method, target, self.headers, bytes(self.body)))

    async def _answer_later(self, method: str, target: str) -> None:
        config, rng = self.emulator.config, self.emulator.rng
        if config.path_jitter_ms > 0:
            await asyncio.sleep(rng.uniform(0, config.path_jitter_ms) / 1000)
        reply = self.emulator.handle(method, target, self.headers, bytes(self.body))
        low, high = config.latency_ms
        if high > 0:
            await asyncio.sleep(rng.uniform(low, high) / 1000)
        self.waiting = None
        if self.closed:  # the client went away: the call was handled all the same, as over a network
            return
        self._send(reply)
        self._resume()

    def _resume(self) -> None:
        if not self.closed and self.waiting is None and not self.writes_paused:
            assert self.transport is not None
            self.transport.resume_reading()
            self._advance()

    def _send(self, reply: Reply) -> None:
        assert self.transport is not None
        if reply.drop:
            self._close()
            return
        payload = _ENCODE(reply.body).encode()
        response = h11.Response(
            status_code=reply.status,
            headers=[
                _JSON,
                (b"content-length", b"%d" % len(payload)),
                (b"x-acs-request-id", str(reply.body.get("RequestId", "")).encode()),
            ],
        )
        http = self.http
        self.transport.write(http.send(response) + http.send(h11.Data(data=payload)) + http.send(h11.EndOfMessage()))
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
        else:
            self._close()

    def _send_plain(self, status: int, text: str) -> None:
        body = text.encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body)), (b"connection", b"close")]
        with contextlib.suppress(h11.LocalProtocolError):
            data = self.http.send(h11.Response(status_code=status, headers=headers))
            if self.transport is not None and not self.closed:
                self.transport.write(data + self.http.send(h11.Data(data=body)) + self.http.send(h11.EndOfMessage()))
        self._close()
