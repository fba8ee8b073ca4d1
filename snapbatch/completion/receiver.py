"""The SnapshotComplete receiver: an HTTP/1.1 server (h11 over anyio) that checks the callback's signature
and answers 200 only once the event is durably in the event store.

With auth keys it requires X-VOD-TIMESTAMP and X-VOD-SIGNATURE = md5("URL|timestamp|key"), URL being the
public callback URL configured in VOD (what the service signs, whatever a reverse proxy rewrites on the
way), the timestamp within ``max_age_s`` of now; anything else gets 403 and a log line. Two keys may be
given while one replaces the other in the console. Events are committed in groups: every request waiting
when the writer gets to the store goes into one transaction.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import math
import resource
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import h11

from snapbatch.completion.events import EventRecord, EventStore, parse_event
from snapbatch.errors import StateError

__all__ = ["Receiver", "ReceiverConfig", "ReceiverStatistics", "callback_signature"]

MAX_BODY_BYTES = 1024 * 1024
IDLE_S = 30.0  # a connection that sends nothing for this long is closed
ANSWER_WITHIN_S = 4.5  # VOD waits 5 s for the 200
LINGER_S = 2.0  # after refusing a body unread, how long its rest is drained so the answer is not lost to a reset
MAX_CONNECTIONS = 1000
_SPARE_FILES = 64  # descriptors kept for the event store, its threads and the listener
_TIMESTAMP_DIGITS = 12  # a Unix time in seconds has 10 until the year 2286
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_HEX = frozenset(string.hexdigits.lower())
_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    405: b"Method Not Allowed",
    413: b"Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


def connection_cap() -> int:
    """How many connections are served at once: fewer than the process may open files, so that a flood
    of connections is answered 503 rather than killing the accept loop with EMFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft - _SPARE_FILES))


def callback_signature(url: str, timestamp: str, key: str) -> str:
    """X-VOD-SIGNATURE of a callback: md5 of "URL|timestamp|key", in hex."""
    return hashlib.md5(f"{url}|{timestamp}|{key}".encode()).hexdigest()


@dataclass(frozen=True)
class ReceiverConfig:
    public_url: str | None = None  # the CallbackURL configured in VOD; required with auth_keys
    auth_keys: tuple[str, ...] = ()
    max_age_s: float = 300.0


@dataclass
class ReceiverStatistics:
    requests: int = 0
    recorded: int = 0  # new events in the store
    duplicates: int = 0  # events already there (a redelivery)
    ignored: int = 0  # other event types, answered 200 and not recorded
    rejected: int = 0  # 403
    malformed: int = 0  # 400
    commits: int = 0


class _Pending:
    __slots__ = ("done", "error", "records")

    def __init__(self, records: list[EventRecord]) -> None:
        self.records = records
        self.done = anyio.Event()
        self.error: str | None = None


class Receiver:
    def __init__(
        self,
        store: EventStore,
        config: ReceiverConfig,
        *,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        if config.auth_keys and not config.public_url:
            raise ValueError("auth keys need the public callback URL they sign")
        self.store, self.config, self.clock, self.log = store, config, clock, log
        self.stats = ReceiverStatistics()
        self._warned_proxy = False
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](math.inf)

    def statistics(self) -> ReceiverStatistics:
        return self.stats

    def check(self, headers: dict[str, str]) -> str | None:
        """Why the callback is not authentic, or None when it is (or no key is configured)."""
        if not self.config.auth_keys:
            return None
        stamp, signature = headers.get("x-vod-timestamp"), headers.get("x-vod-signature")
        if not stamp or not signature:
            return "no X-VOD-TIMESTAMP/X-VOD-SIGNATURE (is authentication on in the console?)"
        # ASCII digits only: int() would also take "1_700_000_000", Unicode digits, or 4,000 digits whose float
        # conversion raises OverflowError
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _TIMESTAMP_DIGITS):
            return "X-VOD-TIMESTAMP is not a Unix time"
        age = self.clock() - int(stamp)
        if abs(age) > self.config.max_age_s:
            return f"stale: X-VOD-TIMESTAMP is {age:+.0f} s from now (more than {self.config.max_age_s:g} s)"
        assert self.config.public_url is not None
        signature = signature.lower()
        if len(signature) != 32 or not set(signature) <= _HEX:  # compare_digest refuses non-ASCII text
            return "wrong X-VOD-SIGNATURE (not 32 hex digits)"
        for key in self.config.auth_keys:
            if hmac.compare_digest(callback_signature(self.config.public_url, stamp, key), signature):
                return None
        return "wrong X-VOD-SIGNATURE (check --public-url and the auth key against the console's settings)"

    async def handle(self, method: str, target: str, headers: dict[str, str], body: bytes, peer: str) -> int:
        """One request -> the HTTP status to answer."""
        self.stats.requests += 1
        # behind a reverse proxy the connection comes from the proxy: name the client it names
        forwarded = headers.get("x-forwarded-for") or headers.get("forwarded")
        peer = headers.get("x-forwarded-for", peer).split(",")[0].strip() or peer
        if forwarded and not self.config.auth_keys and not self._warned_proxy:
            # listening on loopback does not make it private when a proxy forwards the internet to it
            self._warned_proxy = True
            self.log(
                f"warning: callbacks arrive through a proxy (from {peer}) and no auth key is set: anyone who can "
                "reach the proxy can record events; turn on authentication in the console and give its key"
            )
        if method == "GET" and target.split("?")[0] in ("/health", "/healthz"):
            return 200
        if method != "POST":
            return 405
        reason = self.check(headers)
        if reason is not None:
            self.stats.rejected += 1
            self.log(f"403 to {peer} for POST {target}: {reason}")
            return 403
        records = parse_event(body)
        if records is None:
            self.stats.malformed += 1
            self.log(f"400 to {peer} for POST {target}: the body is not a JSON event")
            return 400
        if not records:
            self.stats.ignored += 1
            return 200
        pending = _Pending(records)
        self._send.send_nowait(pending)
        with anyio.move_on_after(ANSWER_WITHIN_S):
            await pending.done.wait()
        if not pending.done.is_set():
            # the service counts no answer in 5 s as a failed try anyway; say so, and let it try again (the
            # event, if it lands after all, makes the retry a harmless duplicate)
            self.log(f"503 to {peer}: the event store took more than {ANSWER_WITHIN_S:g} s to commit")
            return 503
        if pending.error is not None:
            self.log(f"500 to {peer}: {pending.error}; the service will try again")
            return 500
        return 200

    async def write(self) -> None:
        """The group-commit writer; run it beside ``serve`` (serve starts it)."""
        async with self._receive:
            async for first in self._receive:
                group = [first]
                while True:
                    try:
                        group.append(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                records = [r for p in group for r in p.records]
                try:
                    new = await anyio.to_thread.run_sync(self.store.add, records)
                except Exception as exc:  # whatever it is, the writer must go on for the next events
                    reason = str(exc) if isinstance(exc, StateError) else f"cannot record the event ({exc!r})"
                    for p in group:
                        p.error = reason
                        p.done.set()
                    continue
                self.stats.commits += 1
                self.stats.recorded += new
                self.stats.duplicates += len(records) - new
                for p in group:
                    p.done.set()

    # -- HTTP -----------------------------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; reports the bound port through ``task_status``."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        slots = anyio.Semaphore(connection_cap())
        try:
            async with listener, anyio.create_task_group() as tg:
                tg.start_soon(self.write)
                for one in listener.listeners:  # "localhost" may give one listener per address family
                    assert isinstance(one, anyio.abc.SocketListener)
                    tg.start_soon(self._accept, one, slots, tg)
                task_status.started(bound)
        finally:
            self._send.close()
            self._receive.close()

    async def _accept(
        self, listener: anyio.abc.SocketListener, slots: anyio.Semaphore, tg: anyio.abc.TaskGroup
    ) -> None:
        """Accept connections for ever: an error accepting one (out of file descriptors, a client gone
        before it was accepted) is logged and waited out, never the end of the server."""
        warned = 0.0
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if time.monotonic() - warned > 60:
                    warned = time.monotonic()
                    self.log(f"cannot accept a connection: {exc.strerror or exc}; waiting for connections to close")
                await anyio.sleep(0.1 if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM) else 0)
                continue
            tg.start_soon(self._serve_one, stream, slots)

    async def _serve_one(self, stream: anyio.abc.SocketStream, slots: anyio.Semaphore) -> None:
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            # over the cap: refuse at once rather than let the connections use up the file descriptors
            async with stream:
                with anyio.move_on_after(LINGER_S):
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        await stream.send(_BUSY)
            return
        try:
            await self._connection(stream)
        except Exception as exc:  # one connection's failure must not end the server
            self.log(f"connection failed: {exc!r}")
        finally:
            slots.release()

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        try:
            address = stream.extra(anyio.abc.SocketAttribute.remote_address)
            peer = str(address[0]) if isinstance(address, tuple) else str(address)
        except (OSError, anyio.TypedAttributeLookupError):
            peer = "?"
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        async with stream:
            while True:
                try:
                    with anyio.fail_after(IDLE_S):
                        request = await self._read(stream, conn)
                except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    return
                except h11.RemoteProtocolError:
                    await self._respond(stream, conn, 400)
                    return
                if request is None:
                    return
                method, target, headers, body = request
                if body is None:
                    await self._respond(stream, conn, 413)
                    await self._linger(stream)
                    return
                try:
                    status = await self.handle(method, target, headers, body, peer)
                except Exception as exc:  # answered, logged, and the server goes on
                    self.log(f"500 to {peer}: {exc!r}")
                    status = 500
                if not await self._respond(stream, conn, status) or conn.our_state is not h11.DONE:
                    return
                if conn.their_state is not h11.DONE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return

    @staticmethod
    async def _linger(stream: anyio.abc.SocketStream) -> None:
        """After answering a request whose body was left unread: say nothing more, and drain what the client
        still sends for a moment, so that closing does not reset the connection before it reads the answer."""
        with anyio.move_on_after(LINGER_S):
            try:
                await stream.send_eof()
                drained = 0
                while drained <= MAX_BODY_BYTES:
                    drained += len(await stream.receive(65536))
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass

    @staticmethod
    async def _read(
        stream: anyio.abc.ByteStream, conn: h11.Connection
    ) -> tuple[str, str, dict[str, str], bytes | None] | None:
        """The next request (its body None, and left unread, when larger than MAX_BODY_BYTES), or None when the
        client closed."""
        request: h11.Request | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event: Any = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(65536)
                except anyio.EndOfStream:
                    data = b""
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
                length = dict(event.headers).get(b"content-length")
                if length is not None and int(length) > MAX_BODY_BYTES:  # h11 checked it is a number
                    return _request(event, None)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY_BYTES:
                    assert request is not None
                    return _request(request, None)
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return _request(request, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    @staticmethod
    async def _respond(stream: anyio.abc.ByteStream, conn: h11.Connection, status: int) -> bool:
        body = b"ok\n" if status == 200 else _REASONS.get(status, b"Error") + b"\n"
        headers = [("content-type", "text/plain"), ("content-length", str(len(body)))]
        if status == 413:  # the body is left unread: this connection cannot carry another request
            headers.append(("connection", "close"))
        try:
            data = conn.send(h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b"")))
            data = (data or b"") + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return False
        try:
            await stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return False
        return True


def _request(request: h11.Request, body: bytes | None) -> tuple[str, str, dict[str, str], bytes | None]:
    headers = {bytes(n).decode("latin-1").lower(): bytes(v).decode("latin-1") for n, v in request.headers}
    return request.method.decode("ascii"), request.target.decode("latin-1"), headers, body
