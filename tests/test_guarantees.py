"""Promises the suite once let slip: each test here fails when the code is broken in exactly that way."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio

from snapbatch.emulator import EmulatorConfig
from snapbatch.manifest.expand import expand, fingerprint
from snapbatch.manifest.load import load_manifest
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.runner import RunOptions, run_batch
from snapbatch.run.state import State
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.conftest import CliRunner
from tests.emulated import AK_ID, AK_SECRET, process, running
from tests.test_emulator_official_sdks import _core_call
from tests.test_run import ENV, _manifest


def test_the_intent_is_committed_before_the_call_reaches_the_server(cli: CliRunner, tmp_path: Path) -> None:
    """Whenever a call arrives at the server, another connection to the state file already reads its
    request as 'sending' with the attempt counted: the intent was committed before the call left. To
    catch an intent merely queued, each arrival makes the state's write lock busy until the next call
    arrives (or 0.2 s pass): a run that sends before its intent is durable sends into that window."""
    path = _manifest(tmp_path, 12)
    state_file = tmp_path / ".snapbatch" / "t.sqlite3"
    seen: list[tuple[str, Any]] = []
    release = [threading.Event()]

    def hold(until: threading.Event, held: threading.Event) -> None:
        with sqlite3.connect(state_file, timeout=30, isolation_level=None) as db:
            db.execute("BEGIN IMMEDIATE")
            held.set()
            until.wait(0.2)  # bounded: a correct run cannot send the next call while this is held
            db.execute("COMMIT")

    def check(entry: dict[str, Any]) -> None:
        release[0].set()
        video = entry["params"]["VideoId"]
        with sqlite3.connect(state_file) as db:
            row = db.execute("SELECT status, attempts FROM requests WHERE video = ?", (video,)).fetchone()
        seen.append((video, row))
        release[0], held = threading.Event(), threading.Event()
        threading.Thread(target=hold, args=(release[0], held), daemon=True).start()
        held.wait(10)

    with running(EmulatorConfig(qps=1000)) as emu:
        emu.emulator.observers.append(check)
        r = cli("run", str(path), "--endpoint", emu.url, "--qps", "300", env=ENV)
    assert r.code == 0, r.err
    assert len(seen) == 12
    assert all(row == ("sending", 1) for _, row in seen), [s for s in seen if s[1] != ("sending", 1)]


def test_a_wrong_secret_costs_exactly_one_call_even_with_slow_answers(cli: CliRunner, tmp_path: Path) -> None:
    """Answers take 300 ms, the rate allows 500 calls/s and 100 in flight: with a wrong secret, still only
    the single probe call is made (one call at a time until an answer proves the key), exit 4."""
    env = {**ENV, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "wrong-secret-value"}
    with running(EmulatorConfig(qps=1000, latency_ms=(300, 300))) as emu:
        r = cli(
            "run", str(_manifest(tmp_path, 200)), "--endpoint", emu.url, "--qps", "500", "--concurrency", "100", env=env
        )
        calls = len(emu.emulator.calls)
    assert r.code == 4, r.err
    assert calls == 1


def test_the_emulator_never_logs_the_token_or_signature_of_a_v1_sts_call(tmp_path: Path) -> None:
    """An official-SDK V1 call with an STS token, accepted, and one refused for a wrong token: neither the
    token nor the Signature parameter appears in the emulator's log file or its recorded calls."""
    token = "sts-TOKEN-must-not-be-logged-5c1e"
    with process(tmp_path, "--security-token", token) as emu:
        host = emu.url.removeprefix("http://")
        assert "SnapshotJob" in _core_call(host, AK_SECRET, token)
        assert _core_call(host, AK_SECRET, "other-token")["Code"] == "InvalidSecurityToken.MismatchWithAccessKey"
        calls = emu.calls()
        assert emu.log is not None
        text = emu.log.read_text()
    assert len(calls) == 2 and calls[0]["ak"] == AK_ID and calls[0]["outcome"] == "accepted"
    assert token not in text and "other-token" not in text
    for call in calls:
        params = call.get("params", {})
        assert isinstance(params, dict) and "SecurityToken" not in params and "Signature" not in params
        assert "SignatureNonce" in params or call.get("code")  # the log still records what may be shown
    assert '"Signature":' not in text and json.dumps(AK_SECRET) not in text


def test_a_request_is_marked_sending_only_once_its_slot_has_come(tmp_path: Path) -> None:
    """At 1 call/s the second request waits about a second for its slot: while it waits it is still
    'pending' (a kill then leaves nothing in doubt that never left), and a stop during the wait ends the run
    at once with it untouched."""
    state = State(tmp_path / "s.sqlite3")
    manifest = load_manifest(_manifest(tmp_path, 3), {})
    state.ingest(expand(manifest), fingerprint(manifest), manifest.batch)
    waiting = anyio.Event()
    during: list[dict[str, tuple[str, int]]] = []

    async def sleep(seconds: float) -> None:
        if seconds > 0.5:  # the second request's slot: look at the state while the run waits for it
            during.append(_rows(tmp_path / "s.sqlite3"))
            waiting.set()
        await anyio.sleep_forever()  # only a stop ends this wait

    async def go(url: str) -> Any:
        stop = anyio.Event()
        async with VodClient(url, Credentials(AK_ID, AK_SECRET)) as client, anyio.create_task_group() as tg:

            async def stopper() -> None:
                await waiting.wait()
                stop.set()

            tg.start_soon(stopper)
            with anyio.fail_after(60):  # bounds a hang: a stop that cannot interrupt the wait
                return await run_batch(state, client, Limiter(RateWindow(1.0), sleep=sleep), RunOptions(), stop=stop)

    try:
        with running(EmulatorConfig(qps=1000)) as emu:
            result = anyio.run(go, emu.url)
            calls = len(emu.emulator.calls)
        after = _rows(tmp_path / "s.sqlite3")
    finally:
        state.close()
    assert calls == 1 and result.stop_reason == "interrupted"
    assert during[0]["video-00001"] == ("pending", 0) and during[0]["video-00002"] == ("pending", 0)
    assert after == {"video-00000": ("submitted", 1), "video-00001": ("pending", 0), "video-00002": ("pending", 0)}


def _rows(path: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(path) as db:
        return {v: (s, a) for v, s, a in db.execute("SELECT video, status, attempts FROM requests")}
