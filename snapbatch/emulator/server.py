"""The emulator's HTTP/1.1 server: h11 parses and frames, anyio carries the bytes, ``Emulator.handle``
decides. Keeps connections alive, holds requests back by the path jitter and answers by the latency the
configuration asks for, serves HTTPS with an SSL context, and closes without an answer when the service
says to drop. A malformed request gets a plain-text 4xx and the connection is closed."""

from __future__ import annotations

import contextlib
import json
import ssl
from typing import Any

import anyio
import anyio.abc
import h11
from anyio.streams.tls import TLSListener

from snapbatch.emulator.service import Emulator

__all__ = ["MAX_BODY_BYTES", "MAX_HEAD_BYTES", "serve"]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
# h11 measures an incomplete head between reads: small reads make a head over MAX_HEAD_BYTES (by at most one
# read) a 431 rather than a head parsed in full. A request of this API fits in one read.
_RECEIVE_BYTES = 4096
_JSON = b"application/json;charset=utf-8"


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
    tcp = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
    bound = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener: anyio.abc.Listener[Any] = tcp
    if ssl_context is not None:
        listener = TLSListener(tcp, ssl_context, standard_compatible=False)
    async with listener:
        task_status.started(bound)
        await listener.serve(lambda stream: _Connection(emulator, stream).run())


class _Connection:
    def __init__(self, emulator: Emulator, stream: anyio.abc.ByteStream) -> None:
        self.emulator, self.stream = emulator, stream
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    async def run(self) -> None:
        async with self.stream:
            try:
                while await self._one_request():
                    self.http.start_next_cycle()
            except _Refused as refused:
                await self._send_plain(refused.status, refused.text)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass  # the client went away

    async def _one_request(self) -> bool:
        """Read, handle and answer one request; False when the connection is to be closed."""
        request = await self._next()
        if request is None:
            return False
        assert isinstance(request, h11.Request)
        if not request.target.startswith(b"/"):
            raise _Refused(400, "malformed request")
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.headers}
        if "transfer-encoding" in headers:
            raise _Refused(411, "send Content-Length, not chunked")
        if int(headers.get("content-length", "0")) > MAX_BODY_BYTES:  # h11 checked it is a number
            raise _Refused(400, "bad Content-Length")
        body = bytearray()
        while True:
            event = await self._next()
            if event is None:  # the body was cut off: no answer for half a request
                return False
            if isinstance(event, h11.EndOfMessage):
                break
            assert isinstance(event, h11.Data)
            body += event.data
        config = self.emulator.config
        if config.path_jitter_ms > 0:
            await anyio.sleep(self.emulator.rng.uniform(0, config.path_jitter_ms) / 1000)
        reply = self.emulator.handle(
            request.method.decode("ascii"), request.target.decode("latin-1"), headers, bytes(body)
        )
        low, high = config.latency_ms
        if high > 0:
            await anyio.sleep(self.emulator.rng.uniform(low, high) / 1000)
        if reply.drop:
            return False
        payload = json.dumps(reply.body, separators=(",", ":")).encode()
        response = h11.Response(
            status_code=reply.status,
            headers=[
                (b"content-type", _JSON),
                (b"content-length", str(len(payload)).encode()),
                (b"x-acs-request-id", str(reply.body.get("RequestId", "")).encode()),
            ],
        )
        data = self.http.send(response) + self.http.send(h11.Data(data=payload)) + self.http.send(h11.EndOfMessage())
        await self.stream.send(data)
        return self.http.our_state is h11.DONE and self.http.their_state is h11.DONE

    async def _next(self) -> h11.Request | h11.Data | h11.EndOfMessage | None:
        """The next event of the request, or None when the client closed the connection."""
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError as exc:
                if self.http.their_state is h11.SEND_BODY or self.http.our_state is not h11.IDLE:
                    return None  # mid-body (a cut or overlong body): close without an answer
                raise _Refused(exc.error_status_hint, "malformed request") from None
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive(_RECEIVE_BYTES)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    data = b""
                self.http.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request | h11.Data | h11.EndOfMessage):
                return event
            return None  # h11.PAUSED: cannot come before this cycle's EndOfMessage, but never spin on it

    async def _send_plain(self, status: int, text: str) -> None:
        body = text.encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        with contextlib.suppress(h11.LocalProtocolError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            data = self.http.send(h11.Response(status_code=status, headers=[*headers, (b"connection", b"close")]))
            await self.stream.send(data + self.http.send(h11.Data(data=body)) + self.http.send(h11.EndOfMessage()))
