"""The emulator's HTTP server and bookkeeping under a long or busy run: pipelined requests answered in order
(also when held back by latency), the IDs it hands out, and the call list that keeps only the recent calls."""

from __future__ import annotations

import re

from snapbatch.emulator import Emulator, EmulatorConfig
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from tests.emulated import AK_ID, AK_SECRET, raw_exchange, running

REQUEST_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}")


def _signed_calls(n: int) -> list[tuple[str, str, dict[str, str], bytes]]:
    """``n`` SubmitSnapshotJob requests as snapbatch signs them, ready for ``Emulator.handle``."""
    client = VodClient("http://127.0.0.1:9", Credentials(AK_ID, AK_SECRET))
    calls = []
    for i in range(n):
        request = client.signed_request("SubmitSnapshotJob", {"VideoId": f"v-{i}", "Count": "1"})
        headers = {k.decode().lower(): v.decode() for k, v in request.headers.raw}
        calls.append((request.method, request.url.raw_path.decode(), headers, b""))
    return calls


def test_request_ids_and_job_ids_are_unique_and_shaped_as_the_service_s() -> None:
    """RequestIds are upper-case UUIDs (version 4 shape), JobIds 32 lower-case hex digits, none repeated."""
    emulator = Emulator(EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}, qps=1000))
    replies = [emulator.handle(*call) for call in _signed_calls(300)]
    assert all(reply.status == 200 for reply in replies)
    request_ids = [reply.body["RequestId"] for reply in replies]
    job_ids = [reply.body["SnapshotJob"]["JobId"] for reply in replies]
    assert all(REQUEST_ID.fullmatch(r) for r in request_ids) and len(set(request_ids)) == 300
    assert all(re.fullmatch(r"[0-9a-f]{32}", j) for j in job_ids) and len(set(job_ids)) == 300
    assert set(job_ids) == set(emulator.jobs)
    other = Emulator(EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}))
    assert other.handle(*_signed_calls(1)[0]).body["RequestId"] not in request_ids  # another emulator's own


def test_the_call_list_keeps_only_the_most_recent_calls() -> None:
    """A long-running emulator's ``calls`` stays bounded: past keep_calls (plus a tenth) the oldest go, the
    newest stay in order; every call is still logged to the log file."""
    import io

    log = io.StringIO()
    emulator = Emulator(EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}, qps=1000), log_file=log, keep_calls=20)
    replies = [emulator.handle(*call) for call in _signed_calls(100)]
    assert 20 <= len(emulator.calls) <= 22
    assert [c["request_id"] for c in emulator.calls] == [r.body["RequestId"] for r in replies][-len(emulator.calls) :]
    assert len(log.getvalue().splitlines()) == 100


def test_pipelined_requests_are_answered_in_order_even_when_held_back() -> None:
    """Three signed calls sent at once on one connection, each held back by jitter and latency: three
    answers, in the order sent, each naming the call the emulator logged for it."""
    config = EmulatorConfig(latency_ms=(1.0, 3.0), path_jitter_ms=2.0, seed=7)
    with running(config) as emu:
        client = VodClient(emu.url, Credentials(AK_ID, AK_SECRET))
        sent = b""
        for n in range(3):
            request = client.signed_request("SubmitSnapshotJob", {"VideoId": f"v-{n}", "Count": "1"})
            head = f"POST {request.url.raw_path.decode()} HTTP/1.1\r\n".encode()
            sent += head + b"".join(k + b": " + v + b"\r\n" for k, v in request.headers.raw) + b"\r\n"
        answer = raw_exchange(emu.port, sent)
        logged = [(c["request_id"], c["params"]["VideoId"]) for c in emu.emulator.calls]
    assert answer.count(b"HTTP/1.1 200 ") == 3
    ids = re.findall(rb"x-acs-request-id: (\S+)\r\n", answer)
    assert [(i.decode(), f"v-{n}") for n, i in enumerate(ids)] == logged
