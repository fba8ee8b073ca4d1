"""The emulator as VOD (plain HTTP) and as STS (HTTPS, as alibabacloud-credentials always speaks to STS), both
on loopback, for the credential-source tests. The library is pointed at it with ALIBABA_CLOUD_STS_ENDPOINT and
trusts its throwaway CA through SSL_CERT_FILE; nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trustme
from anyio.from_thread import start_blocking_portal

from snapbatch.emulator import Emulator, EmulatorConfig, serve
from snapbatch.emulator.sts import CREDENTIALS_URI_PATH, StsConfig
from tests.emulated import AK_ID, AK_SECRET

ROLE = "acs:ram::1234567890123456:role/snapbatch-vod"
OIDC_PROVIDER = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c1"
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.oidc-token-SHOULD-NOT-SHOW.sig"


@dataclass
class StandIn:
    emulator: Emulator
    vod_url: str  # http://127.0.0.1:PORT
    sts_host: str  # 127.0.0.1:PORT, HTTPS
    uri: str  # the credentials URI, plain HTTP like the metadata-style services it stands for

    def calls(self, action: str) -> list[dict[str, Any]]:
        return [c for c in self.emulator.calls if c.get("action") == action]

    def env(self, **extra: str) -> dict[str, str]:
        """An environment that points the library at this stand-in and never at ECS metadata."""
        return {
            "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
            "ALIBABA_CLOUD_STS_ENDPOINT": self.sts_host,
            **extra,
        }


@contextmanager
def stand_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, lifetime_s: float | None = None, qps: float = 30.0
) -> Iterator[StandIn]:
    ca = trustme.CA()
    ca_path = tmp_path / "sts-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_path))  # read by the library's TLS context, at each new session
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)  # the library sends through these and ignores NO_PROXY
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    config = EmulatorConfig(
        credentials={AK_ID: (AK_SECRET, None)},
        qps=qps,
        sts=StsConfig(lifetime_s=lifetime_s, oidc_tokens={OIDC_PROVIDER: OIDC_TOKEN}),
    )
    emulator = Emulator(config)
    with start_blocking_portal() as portal:
        vod, vod_port = portal.start_task(partial(serve, emulator))
        sts, sts_port = portal.start_task(partial(serve, emulator, ssl_context=server))
        try:
            yield StandIn(
                emulator,
                f"http://127.0.0.1:{vod_port}",
                f"127.0.0.1:{sts_port}",
                f"http://127.0.0.1:{vod_port}{CREDENTIALS_URI_PATH}",
            )
        finally:
            vod.cancel()
            sts.cancel()


def cli_config(home: Path, profiles: list[dict[str, Any]], current: str = "default") -> Path:
    (home / ".aliyun").mkdir(exist_ok=True)
    path = home / ".aliyun" / "config.json"
    path.write_text(json.dumps({"current": current, "profiles": profiles}))
    return path


def ram_role_profile(name: str = "default", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "mode": "RamRoleArn",
        "access_key_id": AK_ID,
        "access_key_secret": AK_SECRET,
        "ram_role_arn": ROLE,
        "ram_session_name": "nightly-snapshots",
        **extra,
    }
