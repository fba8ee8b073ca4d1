"""Both official SDKs' requests are accepted by the emulator; a wrong secret in them is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from snapbatch.emulator import EmulatorConfig
from tests.emulated import AK_ID, AK_SECRET, running

PARAMS = {
    "VideoId": "d3e680e618708efbf2cae7cc93120001",
    "Count": "3",
    "Interval": "0",
    "Width": "1280",
    "UserData": json.dumps({"Extend": {"note": "a b*~+&=%/é🎬"}}),
}


SdkCall = Callable[..., dict[str, Any]]  # (host:port, secret[, token]) -> the answer or its error


def _core_call(url_host: str, secret: str, token: str | None = None) -> dict[str, Any]:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.auth.credentials import StsTokenCredential
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.request import CommonRequest

    if token:
        client = AcsClient(region_id="cn-shanghai", credential=StsTokenCredential(AK_ID, secret, token))
    else:
        client = AcsClient(AK_ID, secret, "cn-shanghai")
    request = CommonRequest(domain=url_host, version="2017-03-21", action_name="SubmitSnapshotJob")
    request.set_protocol_type("http")
    request.set_method("POST")
    for name, value in PARAMS.items():
        request.add_query_param(name, value)
    try:
        answer: dict[str, Any] = json.loads(client.do_action_with_exception(request))
        return answer
    except ServerException as exc:
        return {"Code": exc.get_error_code(), "status": exc.get_http_status()}


def _tea_call(url_host: str, secret: str, token: str | None = None) -> dict[str, Any]:
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_vod20170321.client import Client
    from alibabacloud_vod20170321.models import SubmitSnapshotJobRequest

    client = Client(
        Config(
            access_key_id=AK_ID,
            access_key_secret=secret,
            security_token=token,
            endpoint=url_host,
            protocol="http",
            region_id="cn-shanghai",
        )
    )
    request = SubmitSnapshotJobRequest(
        video_id=PARAMS["VideoId"], count=3, interval=0, width="1280", user_data=PARAMS["UserData"]
    )
    try:
        answer: dict[str, Any] = client.submit_snapshot_job(request).body.to_map()
        return answer
    except Exception as exc:  # the SDK raises its own error type carrying the Code
        return {"Code": getattr(exc, "code", None), "status": getattr(exc, "statusCode", None)}


@pytest.mark.parametrize("call", [_core_call, _tea_call], ids=["aliyun-python-sdk-core (V1)", "tea-openapi (V3)"])
def test_official_sdk_accepted(call: SdkCall) -> None:
    """A correctly signed official-SDK call makes a job, and the emulator saw exactly our parameters."""
    with running() as emu:
        body = call(f"127.0.0.1:{emu.port}", AK_SECRET)
        assert body["SnapshotJob"]["JobId"]
        (logged,) = emu.emulator.calls
    assert logged["outcome"] == "accepted" and logged["ak"] == AK_ID
    assert {k: logged["params"][k] for k in PARAMS} == PARAMS


@pytest.mark.parametrize("call", [_core_call, _tea_call], ids=["aliyun-python-sdk-core (V1)", "tea-openapi (V3)"])
def test_official_sdk_wrong_secret_refused(call: SdkCall) -> None:
    """The same call with a wrong secret gets SignatureDoesNotMatch (HTTP 400) and makes no job."""
    with running() as emu:
        body = call(f"127.0.0.1:{emu.port}", "wrong-secret")
        assert body["Code"] == "SignatureDoesNotMatch"
        assert not emu.emulator.jobs


@pytest.mark.parametrize("call", [_core_call, _tea_call], ids=["aliyun-python-sdk-core (V1)", "tea-openapi (V3)"])
def test_official_sdk_sts_token(call: SdkCall) -> None:
    """With an STS token configured, the SDK's token is checked: right token accepted, wrong one refused."""
    config = EmulatorConfig(credentials={AK_ID: (AK_SECRET, "sts-token-123")})
    with running(config) as emu:
        assert "SnapshotJob" in call(f"127.0.0.1:{emu.port}", AK_SECRET, "sts-token-123")
        assert (
            call(f"127.0.0.1:{emu.port}", AK_SECRET, "other-token")["Code"]
            == "InvalidSecurityToken.MismatchWithAccessKey"
        )
