"""The request snapbatch sends is the one the official V3 SDK (alibabacloud-vod20170321) sends, field by field.

The SDK's real request is captured in-process: its HTTP layer (a requests.Session that darabonba builds per
endpoint) gets a transport adapter that records the prepared request and answers it, so nothing leaves the
process. Only what differs per client is pinned on both sides: the date, the nonce and the User-Agent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl

import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.adapters import BaseAdapter

from snapbatch.manifest.load import to_wire
from snapbatch.vod.client import USER_AGENT, VodClient
from snapbatch.vod.credentials import Credentials

HOST = "vod.cn-shanghai.aliyuncs.com"
DATE = datetime(2026, 11, 25, 12, 0, 7, tzinfo=UTC)
NONCE = "3156853299f313e23d1673dc12e1703d"
ANSWER = b'{"RequestId":"r-1","SnapshotJob":{"JobId":"j-1"}}'


class _Recorder(BaseAdapter):
    """A requests transport adapter that records what it is given to send and answers like VOD."""

    def __init__(self, sent: list[requests.PreparedRequest]) -> None:
        super().__init__()
        self.sent = sent

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        response = requests.Response()
        response.status_code, response._content, response.request = 200, ANSWER, request
        response.headers["content-type"] = "application/json;charset=utf-8"
        return response

    def close(self) -> None:
        pass


@contextmanager
def _captured_sdk() -> Iterator[list[requests.PreparedRequest]]:
    """The official SDK with its HTTP sessions replaced by a recorder; the list fills with what it sends."""
    from alibabacloud_tea_openapi.utils import Utils
    from darabonba.core import DaraCore

    sent: list[requests.PreparedRequest] = []

    def session(*args: Any, **kwargs: Any) -> requests.Session:
        s = requests.Session()
        s.mount("https://", _Recorder(sent))
        s.mount("http://", _Recorder(sent))
        return s

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(DaraCore, "_get_session", staticmethod(session)))
        stack.enter_context(mock.patch.object(Utils, "get_timestamp", staticmethod(lambda: "2026-11-25T12:00:07Z")))
        stack.enter_context(mock.patch.object(Utils, "get_nonce", staticmethod(lambda: NONCE)))
        stack.enter_context(
            mock.patch.object(Utils, "get_user_agent", staticmethod(lambda user_agent=None: USER_AGENT))
        )
        yield sent


def _sdk_request(logical: dict[str, Any], wire: dict[str, str], creds: Credentials) -> requests.PreparedRequest:
    """What SubmitSnapshotJob sends through the official V3 SDK for these parameters."""
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_vod20170321.client import Client
    from alibabacloud_vod20170321.models import SubmitSnapshotJobRequest

    client = Client(
        Config(
            access_key_id=creds.access_key_id,
            access_key_secret=creds.access_key_secret,
            security_token=creds.security_token,
            endpoint=HOST,
            region_id="cn-shanghai",
        )
    )
    # Typed as the SDK's model declares them: whole numbers as int (Width and Height as text), the offsets
    # as a list the SDK serializes itself; the sprite and UserData as the JSON text the SDK takes.
    request = SubmitSnapshotJobRequest(
        video_id=wire.get("VideoId"),
        reference_id=wire.get("ReferenceId"),
        snapshot_template_id=wire.get("SnapshotTemplateId"),
        count=logical.get("Count"),
        interval=logical.get("Interval"),
        specified_offset_time=logical.get("SpecifiedOffsetTime"),
        specified_offset_times=logical.get("SpecifiedOffsetTimes"),
        width=wire.get("Width"),
        height=wire.get("Height"),
        sprite_snapshot_config=wire.get("SpriteSnapshotConfig"),
        user_data=wire.get("UserData"),
    )
    with _captured_sdk() as sent:
        assert client.submit_snapshot_job(request).body.snapshot_job.job_id == "j-1"
    (prepared,) = sent
    return prepared


extend_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
sprite = st.fixed_dictionaries(
    {},
    optional={
        "CellWidth": st.integers(8, 4096),
        "CellHeight": st.integers(8, 4096),
        "Padding": st.integers(0, 50),
        "Margin": st.integers(0, 50),
        "Color": st.sampled_from(["Black", "White", "tomato"]),
        "Columns": st.integers(1, 10000),
        "Lines": st.integers(1, 10000),
        "KeepCellPic": st.sampled_from(["keep", "delete"]),
    },
)
user_data = st.fixed_dictionaries(
    {"Extend": st.one_of(extend_text, st.dictionaries(extend_text, extend_text, max_size=3))},
    optional={"MessageCallback": st.just({"CallbackURL": "https://hooks.example.com/vod?a=1&b=x y"})},
)
logical_params = st.fixed_dictionaries(
    {},
    optional={
        "SnapshotTemplateId": st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
        "Count": st.integers(1, 10_000),
        "Interval": st.integers(0, 3600),
        "SpecifiedOffsetTime": st.integers(0, 2**31 - 1),
        "SpecifiedOffsetTimes": st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=30),
        "Width": st.integers(8, 4096),
        "Height": st.integers(8, 4096),
        "SpriteSnapshotConfig": sprite,
        "UserData": user_data,
    },
)
video = st.one_of(
    st.tuples(st.just("VideoId"), st.from_regex(r"[0-9a-f]{32}", fullmatch=True)),
    st.tuples(st.just("ReferenceId"), st.from_regex(r"[A-Za-z0-9_-]{6,64}", fullmatch=True)),
)
credentials = st.builds(
    Credentials,
    st.from_regex(r"LTAI[A-Za-z0-9]{12,20}", fullmatch=True),
    st.text(min_size=1, max_size=40),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9+/=]{20,300}", fullmatch=True)),
)


@settings(max_examples=100, deadline=None)
@given(logical_params, video, credentials)
def test_request_equals_the_official_v3_sdks(
    logical: dict[str, Any], video: tuple[str, str], creds: Credentials
) -> None:
    """Method, path, query (names, values, order and encoding), empty body, every header and its value, the
    signed header set and the Authorization: snapbatch's request equals the SDK's for the same parameters,
    credentials (STS included), nonce and date. Slow: 100 generated requests, each also built by the official SDK."""
    wire = {video[0]: video[1], **dict(to_wire(logical))}
    ours = VodClient(
        f"https://{HOST}", creds, max_connections=4, clock=lambda: DATE, nonce=lambda: NONCE
    ).signed_request("SubmitSnapshotJob", wire)
    sdk = _sdk_request(logical, wire, creds)

    assert ours.method == sdk.method == "POST"
    assert str(ours.url) == sdk.url
    assert ours.url.raw_path.decode() == sdk.path_url  # path and query, byte for byte
    query = ours.url.query.decode()
    assert parse_qsl(query, keep_blank_values=True, strict_parsing=True) == sorted(wire.items())
    assert ours.content == (sdk.body or b"") == b""

    sdk_headers = {name.lower(): value for name, value in sdk.headers.items()}
    our_headers = dict(ours.headers.items())
    # urllib3, under the SDK's requests, adds Accept-Encoding: identity on the wire; httpx adds nothing
    assert our_headers == {**sdk_headers, "accept-encoding": "identity"}
    assert our_headers["x-acs-content-sha256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    signed = our_headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert ("x-acs-security-token" in signed) == ("x-acs-accesskey-id" in signed) == (creds.security_token is not None)
    assert {"host", "accept", "user-agent", "x-acs-action", "x-acs-date", "x-acs-signature-nonce"} <= set(signed)
    assert our_headers["authorization"] == sdk_headers["authorization"]


def test_non_ascii_and_reserved_characters_are_encoded_as_the_sdk_encodes_them() -> None:
    """A space is '+', '*' is '%2A', '~' stays, UTF-8 is percent-encoded: the SDK's form encoding of the
    query, while the signature canonicalizes the same values with '%20' (both checked against the SDK)."""
    extend = {"note": "a b*~+&=%/é🎬"}
    logical = {"Count": 3, "UserData": {"Extend": extend}}
    wire = {"VideoId": "d3e680e618708efbf2cae7cc93120001", **dict(to_wire(logical))}
    creds = Credentials("LTAIexample0000", "secret")
    ours = VodClient(
        f"https://{HOST}", creds, max_connections=4, clock=lambda: DATE, nonce=lambda: NONCE
    ).signed_request("SubmitSnapshotJob", wire)
    sdk = _sdk_request(logical, wire, creds)
    expected_user_data = "%7B%22Extend%22%3A%7B%22note%22%3A%22a+b%2A~%2B%26%3D%25%2F%C3%A9%F0%9F%8E%AC%22%7D%7D"
    assert ours.url.query.decode() == sdk.path_url.split("?", 1)[1]
    assert f"UserData={expected_user_data}" in ours.url.query.decode()
    assert json.loads(dict(parse_qsl(ours.url.query.decode()))["UserData"]) == {"Extend": extend}
    assert ours.headers["authorization"] == sdk.headers["Authorization"]


def test_each_request_is_dated_by_its_own_second_with_a_fresh_nonce() -> None:
    """x-acs-date is the clock's second at each request (the formatted date is reused only within that
    second), and every request gets a nonce of its own (32 hex digits, as the SDK's)."""
    times = iter(
        [
            DATE,
            DATE + timedelta(microseconds=999_999),
            DATE + timedelta(seconds=1),
            DATE + timedelta(seconds=1, microseconds=5),
            DATE + timedelta(hours=1),
            DATE,
        ]
    )
    client = VodClient(f"https://{HOST}", Credentials("LTAIexample0000", "secret"), clock=lambda: next(times))
    sent = [client.signed_request("SubmitSnapshotJob", {"VideoId": "v", "Count": "1"}) for _ in range(6)]
    assert [r.headers["x-acs-date"] for r in sent] == [
        "2026-11-25T12:00:07Z",
        "2026-11-25T12:00:07Z",
        "2026-11-25T12:00:08Z",
        "2026-11-25T12:00:08Z",
        "2026-11-25T13:00:07Z",
        "2026-11-25T12:00:07Z",
    ]
    nonces = [r.headers["x-acs-signature-nonce"] for r in sent]
    assert len(set(nonces)) == 6 and all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)
