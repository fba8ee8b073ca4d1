"""The cheap per-call paths: the state written from the event loop only when that needs no waiting, and the
proxy chosen once from the environment as httpx's trust_env would."""

from __future__ import annotations

import importlib.util
import sqlite3
import struct
from pathlib import Path

import httpx
import pytest

from snapbatch.errors import UsageError
from snapbatch.models import Outcome, OutcomeKind, Request
from snapbatch.run.state import Change, Intent, Settled, State
from snapbatch.vod.client import VodClient, environment_proxy
from snapbatch.vod.credentials import Credentials

_PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")


def _state(tmp_path: Path) -> State:
    state = State(tmp_path / "s.sqlite3")
    state.ingest([Request("k", "job", None, "VideoId", "v", {"VideoId": "v", "Count": "1"})], "fp", "b")
    return state


def test_a_write_that_would_wait_for_another_connection_is_left_undone(tmp_path: Path) -> None:
    """While another connection (the ingest's, say) holds a write transaction, apply_at_once writes nothing and
    says so at once (False), instead of blocking the event loop, and leaves the writer's busy timeout as it was;
    once it is free, the same call writes."""
    state = _state(tmp_path)
    other = sqlite3.connect(tmp_path / "s.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        assert state.apply_at_once([Intent("k")]) is False
        # the thread's write that follows a refusal waits for the lock as before, not 0 ms
        assert state.db.execute("PRAGMA busy_timeout").fetchone() == (5000,)
        other.execute("COMMIT")
        assert state.counts()["sending"] == 0
        assert state.apply_at_once([Intent("k")]) is True
        assert state.counts()["sending"] == 1
        state.apply([Intent("k")])  # the waiting path still works after a refusal: nothing was left open
    finally:
        other.close()
        state.close()


def test_a_write_under_way_in_this_process_is_not_waited_for(tmp_path: Path) -> None:
    """While this process writes in a thread (the lease's renewal, a group handed to a thread), apply_at_once
    does not wait for the lock: False, nothing written."""
    state = _state(tmp_path)
    try:
        with state._tx():
            assert state.apply_at_once([Intent("k")]) is False
        assert state.counts()["sending"] == 0
    finally:
        state.close()


def test_the_event_loops_writes_never_checkpoint_and_the_journal_stays_bounded(tmp_path: Path) -> None:
    """The event loop's writes (apply_at_once) never checkpoint, which copies the journal into the database file
    and syncs it (on a slow disk, long enough to delay due calls): after loop writes of more pages than SQLite's
    automatic checkpoint (1,000) lets the journal hold, every frame is still in it. Then one write is left to a
    thread (apply_at_once says False), whose commit checkpoints, so the next write starts the journal afresh."""
    keys = [f"k{i}" for i in range(20 * State.LOOP_WRITES_PER_CHECKPOINT + 1)]
    state = State(tmp_path / "s.sqlite3")
    requests = [Request(k, "job", None, "VideoId", f"v{k}", {"VideoId": f"v{k}", "Count": "1"}) for k in keys]
    state.ingest(requests, "fp", "b")

    def changes(group: list[str]) -> list[Change]:
        return [c for k in group for c in (Intent(k), Settled(k, Outcome(OutcomeKind.ACCEPTED, job_id="J" + k)))]

    def journal_frames() -> int:
        """mxFrame, the journal's last valid frame, from the wal-index header (offset 16; sqlite.org/walformat):
        read without checkpointing anything."""
        return int(struct.unpack_from("=I", (tmp_path / "s.sqlite3-shm").read_bytes(), 16)[0])

    try:
        with sqlite3.connect(tmp_path / "s.sqlite3") as other:  # the ingest's pages out of the way
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        other.close()
        for i in range(0, len(keys) - 1, 20):  # 20 requests a write, so that the loop's writes alone pass 1,000 pages
            assert state.apply_at_once(changes(keys[i : i + 20])) is True
        assert journal_frames() > 1000  # never restarted: with SQLite's default a commit past 1,000 pages checkpoints
        # the next write is left to a thread, where the commit checkpoints; the one after starts the journal afresh
        assert state.apply_at_once(changes(keys[-1:])) is False
        state.apply(changes(keys[-1:]))
        assert state.apply_at_once([Intent(keys[0])]) is True
        assert journal_frames() < 100
        assert state.counts()["submitted"] == len(keys) - 1
    finally:
        state.close()


@pytest.mark.parametrize(
    ("env", "url", "proxy"),
    [
        (
            {"HTTPS_PROXY": "http://proxy.example:3128"},
            "https://vod.cn-shanghai.aliyuncs.com",
            "http://proxy.example:3128",
        ),
        ({"HTTPS_PROXY": "proxy.example:3128"}, "https://vod.cn-shanghai.aliyuncs.com", "http://proxy.example:3128"),
        ({"HTTP_PROXY": "http://proxy.example:3128"}, "https://vod.cn-shanghai.aliyuncs.com", None),
        ({"ALL_PROXY": "http://all.example:8080"}, "https://vod.cn-shanghai.aliyuncs.com", "http://all.example:8080"),
        (
            {"HTTPS_PROXY": "http://p:1", "ALL_PROXY": "http://all.example:8080"},
            "https://vod.cn-shanghai.aliyuncs.com",
            "http://p:1",
        ),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "aliyuncs.com"}, "https://vod.cn-shanghai.aliyuncs.com", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "other.com, *"}, "https://vod.cn-shanghai.aliyuncs.com", None),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "shanghai.aliyuncs.com"},
            "https://vod.cn-shanghai.aliyuncs.com",
            "http://p:1",
        ),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:8080", None),
        # a NO_PROXY entry with a port covers that port only, as for httpx (a default port is no port to it)
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1:8080"}, "http://127.0.0.1:8080", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1:9999"}, "http://127.0.0.1:8080", "http://p:1"),
        ({"ALL_PROXY": "http://p:1", "NO_PROXY": "::1"}, "http://[::1]:8080", None),
        ({"http_proxy": "http://lower:1"}, "http://127.0.0.1:8080", "http://lower:1"),
        ({}, "https://vod.cn-shanghai.aliyuncs.com", None),
    ],
)
def test_the_proxy_is_the_one_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, proxy: str | None
) -> None:
    """HTTPS_PROXY or HTTP_PROXY by the endpoint's scheme, else ALL_PROXY (a bare host:port meaning http://);
    none when NO_PROXY covers the host (itself or a parent domain, or *, with the endpoint's port when the entry
    names one); VodClient keeps that choice."""
    for name in _PROXY_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert environment_proxy(httpx.URL(url)) == proxy
    assert VodClient(url, Credentials("LTAIexample0000", "secret")).proxy == proxy


@pytest.mark.parametrize(
    ("proxy", "why"),
    [("socks5://user:hunter2@127.0.0.1:1080", "socksio"), ("ftp://user:hunter2@127.0.0.1:21", "not an http://")],
)
def test_a_proxy_httpx_cannot_use_is_a_usage_error_that_hides_its_password(
    monkeypatch: pytest.MonkeyPatch, proxy: str, why: str
) -> None:
    """A proxy the environment names that httpx cannot use (SOCKS without socksio, another scheme) is a
    UsageError naming the variable and the proxy's host, never its password, instead of httpx's exception."""
    if why == "socksio" and importlib.util.find_spec("socksio"):
        pytest.skip("socksio is installed here: httpx can use a SOCKS proxy")
    for name in _PROXY_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    with pytest.raises(UsageError) as caught:
        VodClient("https://vod.cn-shanghai.aliyuncs.com", Credentials("LTAIexample0000", "secret"))
    message = str(caught.value)
    assert why in message and "HTTPS_PROXY" in message and "127.0.0.1" in message
    assert "hunter2" not in message and "user" not in message


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_an_unreadable_ssl_cert_file_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes | None
) -> None:
    """SSL_CERT_FILE naming a missing file or one without certificates is a UsageError that names the variable
    and the file, instead of an OSError or ssl.SSLError escaping as a traceback with exit 1."""
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_bytes(content)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    with pytest.raises(UsageError) as caught:
        VodClient("http://127.0.0.1:9", Credentials("LTAIexample0000", "secret"))
    assert "SSL_CERT_FILE" in str(caught.value) and str(bundle) in str(caught.value)
