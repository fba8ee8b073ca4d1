"""The emulator playing STS: AssumeRole checked like any signed call, issued keys accepted until they expire,
counted against the role's account."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

import anyio

from snapbatch.emulator import Emulator, EmulatorConfig, StsConfig, serve
from snapbatch.models import ACCEPTED, FATAL, THROTTLED, OutcomeKind
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.signing import iso_timestamp, sign_v1
from tests.emulated import AK_ID, AK_SECRET

ROLE = "acs:ram::1234567890123456:role/vod"


def _assume(emulator: Emulator, secret: str = AK_SECRET, nonce: str = "n1") -> tuple[int, dict[str, object]]:
    params = {
        "Action": "AssumeRole",
        "Version": "2015-04-01",
        "Format": "JSON",
        "RoleArn": ROLE,
        "RoleSessionName": "s1",
        "DurationSeconds": "900",
        "AccessKeyId": AK_ID,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": nonce,
        "Timestamp": iso_timestamp(datetime.fromtimestamp(emulator.wall(), UTC)),
    }
    params["Signature"] = sign_v1("GET", params, secret)
    reply = emulator.handle("GET", "/?" + urlencode(params), {"host": "sts"}, b"")
    return reply.status, reply.body


def test_assume_role_is_signed_and_its_keys_expire() -> None:
    """A wrongly signed AssumeRole is refused; a right one issues a key VOD accepts until its expiry (per
    --sts-lifetime), then answers InvalidSecurityToken.Expired, which the client cannot renew from a fixed key."""
    wall = [1795737600.0]  # 2026-11-27T00:00:00Z
    config = EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}, sts=StsConfig(lifetime_s=20))
    emulator = Emulator(config, wall=lambda: wall[0])
    status, body = _assume(emulator, secret="wrong")
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    status, body = _assume(emulator, nonce="n2")
    assert status == 200
    issued = body["Credentials"]
    assert isinstance(issued, dict) and issued["Expiration"] == "2026-11-27T00:00:20Z"
    creds = Credentials(issued["AccessKeyId"], issued["AccessKeySecret"], issued["SecurityToken"], "issued")

    async def go() -> list[str]:
        kinds = []
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, emulator)
            async with VodClient(f"http://127.0.0.1:{port}", creds, clock=_utc(wall)) as client:
                for at in (5.0, 19.0, 20.0):
                    wall[0] = 1795737600.0 + at
                    outcome = await client.submit({"VideoId": "v", "Count": "1"})
                    kinds.append(f"{outcome.kind}:{outcome.code}")
            tg.cancel_scope.cancel()
        return kinds

    assert anyio.run(go) == [f"{ACCEPTED}:None", f"{ACCEPTED}:None", f"{FATAL}:InvalidSecurityToken.Expired"]
    assert issued["SecurityToken"] not in json.dumps(emulator.calls)


def test_issued_keys_share_the_roles_quota() -> None:
    """Keys issued for one role count against that role's account: with qps 2, a third call in the same second
    is throttled even though it uses another key."""
    config = EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}, sts=StsConfig(), qps=2)
    emulator = Emulator(config)
    keys = [_assume(emulator, nonce=f"n{i}")[1]["Credentials"] for i in range(2)]

    async def go() -> list[OutcomeKind]:
        kinds = []
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, emulator)
            for issued in (keys[0], keys[1], keys[1]):
                assert isinstance(issued, dict)
                creds = Credentials(issued["AccessKeyId"], issued["AccessKeySecret"], issued["SecurityToken"])
                async with VodClient(f"http://127.0.0.1:{port}", creds) as client:
                    kinds.append((await client.submit({"VideoId": "v", "Count": "1"})).kind)
            tg.cancel_scope.cancel()
        return kinds

    assert anyio.run(go) == [ACCEPTED, ACCEPTED, THROTTLED]


def _utc(wall: list[float]) -> Callable[[], datetime]:
    return lambda: datetime.fromtimestamp(wall[0], UTC)
