"""The HTTPS path, which every real call takes: httpx's transport against the emulator behind TLS."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import trustme

from snapbatch.emulator import Emulator, EmulatorConfig, running_emulator
from snapbatch.models import ACCEPTED, TRANSIENT
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.conftest import CliRunner
from tests.emulated import AK_ID, AK_SECRET, process
from tests.test_run import ENV, _manifest

PARAMS = {"VideoId": "d3e680e618708efbf2cae7cc93120001", "Count": "2"}


@contextmanager
def https_emulator(ca: trustme.CA) -> Iterator[tuple[Emulator, int]]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    emulator = Emulator(EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}, query_only=True))
    with running_emulator(emulator, ssl_context=server_context) as served:
        yield emulator, served.port


def _submit(url: str, client_context: ssl.SSLContext, times: int = 1) -> list[str]:
    async def go() -> list[str]:
        async with VodClient(url, Credentials(AK_ID, AK_SECRET), max_connections=4, tls=client_context) as client:
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


def test_emulator_command_serves_https_and_run_trusts_it_only_through_ssl_cert_file(tmp_path: Path) -> None:
    """`snapbatch emulator --tls-cert --tls-key` serves HTTPS. `snapbatch run` (a process of its own, with
    the system's trust store) refuses the unknown certificate and says the endpoint never answered;
    trusting the CA through SSL_CERT_FILE, the same run goes through. Slow by nature: an emulator and two runs, each
    a process of its own, over TLS."""
    ca = trustme.CA()
    served = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_pem = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    served.cert_chain_pems[0].write_to_path(str(cert))
    for extra in served.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    served.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_pem))
    manifest = _manifest(tmp_path, 5)
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    env.update(ENV)
    with process(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)) as emu:
        assert emu.url.startswith("https://127.0.0.1:")
        command = [sys.executable, "-m", "snapbatch", "run", str(manifest), "--endpoint", emu.url]
        untrusted = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        trusted = subprocess.run(
            command, env={**env, "SSL_CERT_FILE": str(ca_pem)}, capture_output=True, text=True, timeout=120
        )
        calls = emu.calls()
    assert untrusted.returncode == 5, untrusted.stderr
    assert "the endpoint never answered" in untrusted.stderr and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert trusted.returncode == 0, trusted.stderr
    assert len(calls) == 5 and all(c["outcome"] == "accepted" for c in calls)


def test_emulator_tls_flags_are_checked_before_serving(cli: CliRunner, tmp_path: Path) -> None:
    """Half of the TLS pair, or files that are not a certificate and its key: exit 2 saying so."""
    half = cli("emulator", "--tls-cert", str(tmp_path / "cert.pem"))
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    junk = cli("emulator", "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"))
    assert half.code == 2 and "--tls-cert and --tls-key go together" in half.err
    assert junk.code == 2 and "cannot use --tls-cert" in junk.err
