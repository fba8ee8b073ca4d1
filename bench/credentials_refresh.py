"""Renewing credentials mid-run: a RamRoleArn run whose STS credentials expire every 20 s, beside the same run
with a fixed AccessKey, against an emulator process that plays VOD and STS over HTTPS (30 calls/s per
account, 20-80 ms answers).

    python bench/credentials_refresh.py [SECONDS]        # default 120: 3,600 requests at 30/s each run

Prints, for each run, the accepted rate at the server (whole run and sustained), the busiest and the
slowest 1 s window of accepted calls, the longest gap between two accepted calls (a call held up by a
token exchange would show here), throttled and expired-token answers, AssumeRole calls, how many keys
signed accepted calls, and how many requests were left unsubmitted. The alibabacloud-credentials library
does each exchange against the loopback stand-in; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trustme

sys.path.insert(0, str(Path(__file__).parent))
from _emulator import KEY_ID, KEY_SECRET, emulator, server_view
from _measure import table

from snapbatch.vod.chain import chain_sources

LIFETIME_S = 20
ROLE = "acs:ram::1234567890123456:role/snapbatch-vod"


def _run(root: Path, url: str, env: dict[str, str], name: str, n: int) -> tuple[int, dict[str, Any], str]:
    (root / f"{name}.txt").write_text("".join(f"{name}-{i:06d}\n" for i in range(n)))
    manifest = root / f"{name}.yaml"
    manifest.write_text(
        f"version: 1\nbatch: {name}\njobs:\n  - {{name: all, videos: {{file: {name}.txt}}, params: {{Count: 1}}}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "snapbatch", "run", str(manifest), "--endpoint", url, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr


def _row(label: str, calls: list[dict[str, Any]], n: int, code: int, summary: dict[str, Any], err: str) -> list[str]:
    vod = [c for c in calls if c.get("action") not in ("AssumeRole", "AssumeRoleWithOIDC", "CredentialsURI")]
    view = server_view(vod)
    accepted = sorted(c["mono"] for c in vod if c.get("outcome") == "accepted")
    start, end = accepted[0], accepted[-1]
    seconds = [0] * (int(end - start) + 1)
    for t in accepted:
        seconds[int(t - start)] += 1
    slowest = min(seconds[1:-1]) if len(seconds) > 2 else 0
    gap_ms = max((b - a for a, b in itertools.pairwise(accepted)), default=0.0) * 1000
    return [
        label,
        str(n),
        f"{view['rate']:.2f}",
        f"{view['sustained']:.2f}",
        str(view["busiest"]),
        str(slowest),
        f"{gap_ms:.0f}",
        str(view["throttled"]),
        str(sum(1 for c in vod if c.get("code") == "InvalidSecurityToken.Expired")),
        str(sum(1 for c in calls if c.get("action") == "AssumeRole")),
        str(len({c["ak"] for c in vod if c.get("outcome") == "accepted"})),
        str(err.count("credentials renewed from")),
        str(n - int(summary.get("submitted", 0))),
        str(code),
    ]


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    n = int(seconds * 30)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        ca.cert_pem.write_to_path(str(root / "ca.pem"))
        cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
        cert.private_key_pem.write_to_path(str(root / "key.pem"))
        (root / ".aliyun").mkdir()
        profile = {
            "name": "default",
            "mode": "RamRoleArn",
            "access_key_id": KEY_ID,
            "access_key_secret": KEY_SECRET,
            "ram_role_arn": ROLE,
        }
        (root / ".aliyun" / "config.json").write_text(json.dumps({"current": "default", "profiles": [profile]}))
        # no proxy: the library would send the loopback exchanges through it (it ignores NO_PROXY)
        base = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_") and "proxy" not in k.lower()}
        base.update(SSL_CERT_FILE=str(root / "ca.pem"), ALIBABA_CLOUD_ECS_METADATA_DISABLED="true", HOME=str(root))
        args = ("--qps", "30", "--latency-ms", "20", "80", "--tls-cert", str(root / "cert.pem"))
        args += ("--tls-key", str(root / "key.pem"), "--sts-lifetime", str(LIFETIME_S))
        rows = []
        with emulator(root, *args) as served:
            static = {**base, "ALIBABA_CLOUD_ACCESS_KEY_ID": KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": KEY_SECRET}
            code, summary, err = _run(root, served.url, static, "static", n)
            rows.append(_row("fixed AccessKey", served.calls(), n, code, summary, err))
        with emulator(root, *args) as served:
            renewing = {**base, "ALIBABA_CLOUD_STS_ENDPOINT": served.url.removeprefix("https://")}
            [source] = chain_sources(renewing, root)  # loopback only: check where the exchange would go first
            if f"via {served.url.removeprefix('https://')})" not in source.label:
                raise SystemExit(f"refusing to run: the exchange would not go to the stand-in ({source.label})")
            code, summary, err = _run(root, served.url, renewing, "renewing", n)
            rows.append(_row(f"RamRoleArn, {LIFETIME_S} s credentials", served.calls(), n, code, summary, err))
            if code != 0:
                print(err[-3000:], file=sys.stderr)
    header = [
        "credentials",
        "requests",
        "calls/s",
        "sustained",
        "busiest 1 s",
        "slowest 1 s",
        "longest gap ms",
        "throttled",
        "expired answers",
        "AssumeRole",
        "keys used",
        "renewals logged",
        "lost",
        "exit",
    ]
    print(table(header, rows))


if __name__ == "__main__":
    main()
