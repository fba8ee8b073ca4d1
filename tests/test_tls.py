"""The HTTPS path, which every real call takes: the lean transport against the emulator behind TLS."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import anyio
import trustme
from anyio.from_thread import start_blocking_portal

from snapbatch.client import VodClient
from snapbatch.emulator import Emulator, EmulatorConfig
from snapbatch.models import ACCEPTED, TRANSIENT
from snapbatch.signing import Credentials
from snapbatch.transport import LeanTransport
from tests.emulated import AK_ID, AK_SECRET

PARAMS = {"VideoId": "d3e680e618708efbf2cae7cc93120001", "Count": "2"}


@contextmanager
def https_emulator(ca: trustme.CA) -> Iterator[tuple[Emulator, int]]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    emulator = Emulator(EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}))
    with start_blocking_portal() as portal:
        future, port = portal.start_task(partial(emulator.serve, ssl_context=server_context))
        try:
            yield emulator, port
        finally:
            future.cancel()


def _submit(url: str, client_context: ssl.SSLContext, times: int = 1) -> list[str]:
    async def go() -> list[str]:
        transport = LeanTransport(max_connections=4, ssl_context=client_context)
        async with VodClient(url, Credentials(AK_ID, AK_SECRET), transport=transport) as client:
            return [(await client.submit(PARAMS)).kind for _ in range(times)]

    return anyio.run(go)


def test_https_calls_are_accepted_over_one_connection() -> None:
    """Signed calls over TLS to a certificate the client trusts: accepted, the connection kept alive."""
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with https_emulator(ca) as (emulator, port):
        assert _submit(f"https://localhost:{port}", client_context, times=3) == [ACCEPTED] * 3
        assert len(emulator.jobs) == 3


def test_untrusted_certificate_is_refused_before_sending() -> None:
    """A certificate the client does not trust: the call is refused at connect (transient: nothing was sent)."""
    with https_emulator(trustme.CA()) as (emulator, port):
        assert _submit(f"https://localhost:{port}", ssl.create_default_context()) == [TRANSIENT]
        assert emulator.calls == []
