"""Hostile input: whatever a manifest, an ID file or an HTTP client sends, nothing crashes."""

from __future__ import annotations

import io
import re
import socket
import tempfile
from pathlib import Path
from typing import Any

import anyio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapbatch.cli.main import main
from snapbatch.models import ACCEPTED
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.emulated import AK_ID, AK_SECRET, running

KEYS = [
    "version",
    "batch",
    "jobs",
    "name",
    "videos",
    "reference_ids",
    "file",
    "column",
    "template",
    "templates",
    "sprite",
    "sprites",
    "params",
    "defaults",
    "Count",
    "Interval",
    "Width",
    "UserData",
    "Extend",
    "MessageCallback",
    "CallbackURL",
    "SpriteSnapshotConfig",
    "SnapshotTemplateId",
    "qps",
    "endpoint",
    "<<",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**20),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["${X}", "${", "$${", "~", "0123", "1e5", "no", "ids.txt"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)


def _validate(text: bytes, files: dict[str, bytes] | None = None) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.yaml"
        path.write_bytes(text)
        for name, content in (files or {}).items():
            (Path(tmp) / name).write_bytes(content)
        err = io.StringIO()
        code = main(["validate", str(path)], env={}, stdout=io.StringIO(), stderr=err)
        message = err.getvalue().replace(str(path.parent) + "/", "")
    return code, message


def _check(code: int, message: str) -> None:
    assert code in (0, 2)
    assert "Traceback" not in message
    if code == 2:
        for line in message.splitlines():
            assert re.match(r"^(m\.yaml|ids\.txt|ids\.csv)(:\d+:\d+)?: ", line), line


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_structured_garbage_never_crashes(document: Any) -> None:
    """Random YAML documents built from manifest words: exit 0 or 2, every message located, no traceback. Slow: 300
    generated documents, each validated in full."""
    _check(*_validate(yaml.safe_dump(document, allow_unicode=True).encode()))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    """Random bytes as a manifest: exit 2 with a located message."""
    _check(*_validate(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_id_and_csv_files_never_crash(content: bytes, csv: bool) -> None:
    """Random bytes as an ID file or a CSV column source: exit 0 or 2, located, no traceback."""
    source = "{file: ids.csv, column: Id}" if csv else "{file: ids.txt}"
    manifest = f"version: 1\nbatch: f\njobs:\n  - {{name: j, videos: {source}, params: {{Count: 1}}}}\n"
    _check(*_validate(manifest.encode(), {"ids.csv" if csv else "ids.txt": content}))


def _raw(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


http_junk = st.one_of(
    st.binary(max_size=600),
    st.builds(
        lambda m, t, h, b: m + b" " + t + b" HTTP/1.1\r\n" + h + b"\r\n\r\n" + b,
        st.sampled_from([b"GET", b"POST", b"PUT", b"\x00", b""]),
        st.binary(max_size=40),
        st.binary(max_size=200),
        st.binary(max_size=100),
    ),
    st.builds(
        lambda n: b"POST / HTTP/1.1\r\nContent-Length: " + n + b"\r\n\r\nxx",
        st.sampled_from([b"-1", b"99999999999", b"abc", b"5", b""]),
    ),
)


def test_emulator_survives_malformed_http() -> None:
    """Hundreds of malformed requests on fresh connections; afterwards a signed call still succeeds."""

    @settings(max_examples=150, deadline=None)
    @given(http_junk)
    def hammer(data: bytes) -> None:
        _raw(port, data)

    async def call(url: str) -> str:
        async with VodClient(url, Credentials(AK_ID, AK_SECRET)) as client:
            return (await client.submit({"VideoId": "v", "Count": "1"})).kind

    with running() as emu:
        port = emu.port
        hammer()
        assert anyio.run(call, emu.url) == ACCEPTED
