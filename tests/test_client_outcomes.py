"""Every outcome class, produced by the real client against the real emulator on loopback."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from snapbatch.emulator import DROP_AFTER, DROP_BEFORE, EmulatorConfig
from snapbatch.errors import UsageError
from snapbatch.models import ACCEPTED, FAILED, FATAL, IN_DOUBT, THROTTLED, TRANSIENT, Outcome
from snapbatch.vod.client import VodClient, classify
from snapbatch.vod.credentials import Credentials
from tests.emulated import AK_ID, AK_SECRET, running

GOOD = Credentials(AK_ID, AK_SECRET)
PARAMS = {"VideoId": "d3e680e618708efbf2cae7cc93120001", "Count": "2"}


def _submit(
    url: str, params: dict[str, str] = PARAMS, creds: Credentials = GOOD, times: int = 1, **kwargs: object
) -> list[Outcome]:
    async def go() -> list[Outcome]:
        async with VodClient(url, creds, **kwargs) as client:  # type: ignore[arg-type]
            return [await client.submit(params) for _ in range(times)]

    return anyio.run(go)


def test_accepted_carries_job_and_request_ids() -> None:
    """200 with SnapshotJob.JobId: accepted, JobId and RequestId kept; the emulator made that job."""
    with running() as emu:
        (outcome,) = _submit(emu.url)
        assert outcome.kind == ACCEPTED and outcome.http_status == 200
        assert outcome.job_id in emu.emulator.jobs
        assert outcome.request_id == emu.emulator.calls[0]["request_id"]


def test_throttled_by_the_per_second_limit() -> None:
    """Over the emulator's qps within one second: Throttling.User (HTTP 400) is classified throttled."""
    with running(EmulatorConfig(qps=2)) as emu:
        outcomes = _submit(emu.url, times=3)
    assert [o.kind for o in outcomes] == [ACCEPTED, ACCEPTED, THROTTLED]
    assert (outcomes[2].code, outcomes[2].http_status) == ("Throttling.User", 400)


@pytest.mark.parametrize(("code", "status"), [("InternalError", 500), ("ServiceUnavailable", 503)])
def test_transient_server_errors(code: str, status: int) -> None:
    """5xx service errors are transient and made no job."""
    with running(EmulatorConfig(faults={code: 1.0})) as emu:
        (outcome,) = _submit(emu.url)
        assert (outcome.kind, outcome.code, outcome.http_status) == (TRANSIENT, code, status)
        assert not emu.emulator.jobs


def test_connection_refused_is_transient() -> None:
    """Nobody listening: transient (the call certainly made no job)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    (outcome,) = _submit(f"http://127.0.0.1:{port}")
    assert outcome.kind == TRANSIENT and "ConnectError" in (outcome.message or "")


def test_dropped_after_job_made_is_in_doubt() -> None:
    """The server made the job and the connection dropped: in doubt, and the job really exists."""
    with running(EmulatorConfig(faults={DROP_AFTER: 1.0})) as emu:
        (outcome,) = _submit(emu.url)
        assert outcome.kind == IN_DOUBT
        assert len(emu.emulator.jobs) == 1


def test_dropped_before_job_is_also_in_doubt() -> None:
    """From the client's side a drop before or after looks the same: in doubt (no job was made here)."""
    with running(EmulatorConfig(faults={DROP_BEFORE: 1.0})) as emu:
        (outcome,) = _submit(emu.url)
        assert outcome.kind == IN_DOUBT and not emu.emulator.jobs


def test_read_timeout_is_in_doubt() -> None:
    """No answer within the timeout: in doubt."""
    with running(EmulatorConfig(latency_ms=(400, 400))) as emu:
        (outcome,) = _submit(emu.url, timeout_s=0.1)
        assert outcome.kind == IN_DOUBT and "ReadTimeout" in (outcome.message or "")


def test_unknown_video_fails_the_item() -> None:
    """A video the service does not know: InvalidVideo.NotFound (404), failed for this item only."""
    with running(EmulatorConfig(videos={"known-video": None})) as emu:
        (outcome,) = _submit(emu.url)
    assert (outcome.kind, outcome.code, outcome.http_status) == (FAILED, "InvalidVideo.NotFound", 404)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"VideoId": "v", "Count": "0"}, "InvalidParameter"),
        ({"VideoId": "v"}, "MissingParameter"),
        ({"ReferenceId": "bad id!", "Count": "1"}, "InvalidParameter"),
        ({"VideoId": "v", "Count": "1", "UserData": "{not json"}, "InvalidParameter"),
    ],
)
def test_bad_request_fails_the_item(params: dict[str, str], code: str) -> None:
    """Parameters the service rejects: failed for this item, with the service's Code."""
    with running() as emu:
        (outcome,) = _submit(emu.url, params)
    assert (outcome.kind, outcome.code) == (FAILED, code)


def test_illegal_status_fails_the_item() -> None:
    """Forbidden.IllegalStatus (video in the wrong state) fails the item; it is not an account error."""
    with running(EmulatorConfig(faults={"Forbidden.IllegalStatus": 1.0})) as emu:
        (outcome,) = _submit(emu.url)
    assert (outcome.kind, outcome.code) == (FAILED, "Forbidden.IllegalStatus")


@pytest.mark.parametrize(
    ("creds", "code"),
    [
        (Credentials(AK_ID, "wrong-secret"), "SignatureDoesNotMatch"),
        (Credentials("LTAIunknown", AK_SECRET), "InvalidAccessKeyId.NotFound"),
    ],
)
def test_bad_credentials_are_fatal(creds: Credentials, code: str) -> None:
    """A wrong secret or unknown key: fatal, with a hint of what to check."""
    with running() as emu:
        (outcome,) = _submit(emu.url, creds=creds)
        assert not emu.emulator.jobs
    assert (outcome.kind, outcome.code) == (FATAL, code)
    assert "check the AccessKey" in (outcome.message or "")
    assert "\n" not in (outcome.message or ""), "messages go into log lines: one line each"


def test_no_permission_is_fatal() -> None:
    """Forbidden.RAM: fatal for the run."""
    with running(EmulatorConfig(faults={"Forbidden.RAM": 1.0})) as emu:
        (outcome,) = _submit(emu.url)
    assert (outcome.kind, outcome.code) == (FATAL, "Forbidden.RAM")


def test_clock_skew() -> None:
    """A clock 16 minutes off: InvalidTimeStamp.Expired, fatal; 14 minutes off is still accepted."""
    with running() as emu:
        (late,) = _submit(emu.url, clock=lambda: datetime.now(UTC) + timedelta(minutes=16))
        (ok,) = _submit(emu.url, clock=lambda: datetime.now(UTC) - timedelta(minutes=14))
    assert (late.kind, late.code) == (FATAL, "InvalidTimeStamp.Expired")
    assert ok.kind == ACCEPTED


def test_every_attempt_has_a_fresh_nonce() -> None:
    """Two attempts never share a nonce; a reused nonce is refused (SignatureNonceUsed, transient)."""
    with running() as emu:
        assert [o.kind for o in _submit(emu.url, times=3)] == [ACCEPTED] * 3
        outcomes = _submit(emu.url, times=2, nonce=lambda: "fixed-nonce")
    assert [(o.kind, o.code) for o in outcomes] == [(ACCEPTED, None), (TRANSIENT, "SignatureNonceUsed")]


def test_sts_token_sent() -> None:
    """STS credentials: the token is sent and checked; a missing one is refused, fatal."""
    config = EmulatorConfig(credentials={AK_ID: (AK_SECRET, "tok-1")})
    with running(config) as emu:
        (ok,) = _submit(emu.url, creds=Credentials(AK_ID, AK_SECRET, "tok-1"))
        (missing,) = _submit(emu.url, creds=GOOD)
    assert ok.kind == ACCEPTED
    assert (missing.kind, missing.code) == (FATAL, "InvalidSecurityToken.Malformed")


def test_plain_http_only_to_loopback() -> None:
    """http:// to a remote host is refused before anything is sent."""
    with pytest.raises(UsageError, match="plain http:// to a remote host"):
        VodClient("http://vod.cn-shanghai.aliyuncs.com", GOOD)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (502, b"<html><body>Bad Gateway</body></html>", TRANSIENT),
        (403, b"<html>Access denied by proxy</html>", FATAL),
        (200, b"<html>captive portal</html>", IN_DOUBT),
        (200, b'{"RequestId": "r"}', IN_DOUBT),
        (429, b"", TRANSIENT),
        (400, b'{"Code": "SomethingNew", "Message": "m"}', FAILED),
        (503, b'{"Code": "SomethingNew"}', TRANSIENT),
        (400, b'{"Code": "Throttling.Api"}', THROTTLED),
        (400, b'{"Code": "OperationDenied.Suspended"}', FATAL),
    ],
)
def test_classify_bodies_that_are_not_vod_json(status: int, body: bytes, kind: str) -> None:
    """A proxy's HTML page or an unknown Code is classified, never crashed on."""
    assert classify(status, body).kind == kind


def test_job_detail_processing_then_success() -> None:
    """GetJobDetail answers for the emulator's jobs: Processing, then Success once job_seconds have passed
    on the emulator's clock."""
    now = [time.time()]

    async def go(url: str) -> list[str | None]:
        async with VodClient(url, GOOD) as client:
            outcome = await client.submit(PARAMS)
            assert outcome.job_id
            first = await client.job_status(outcome.job_id)
            now[0] += 59.9
            almost = await client.job_status(outcome.job_id)
            now[0] += 0.1
            return [first, almost, await client.job_status(outcome.job_id), await client.job_status("nope")]

    with running(EmulatorConfig(job_seconds=60), wall=lambda: now[0]) as emu:
        assert anyio.run(go, emu.url) == ["Processing", "Processing", "Success", None]


def test_no_secret_in_log_outcomes_or_messages(tmp_path: Path) -> None:
    """The emulator's JSONL log, outcomes and their messages never hold the secret or the token."""
    log = tmp_path / "calls.jsonl"
    config = EmulatorConfig(credentials={AK_ID: (AK_SECRET, "token-SECRET-42")})
    with log.open("w") as handle, running(config) as emu:
        emu.emulator.log_file = handle
        outcomes = _submit(emu.url, creds=Credentials(AK_ID, AK_SECRET, "token-SECRET-42"), times=2)
        outcomes += _submit(emu.url, creds=Credentials(AK_ID, "other-secret-XYZ", "token-SECRET-42"))
    text = log.read_text() + repr(outcomes)
    assert len([json.loads(line) for line in log.read_text().splitlines()]) == 3
    for secret in (AK_SECRET, "token-SECRET-42", "other-secret-XYZ"):
        assert secret not in text
