"""How people call SubmitSnapshotJob without snapbatch, for comparison in the benchmarks.

- ``sdk_thread_pool``: the official aliyun-python-sdk-core in a thread pool, with a sleep-based limit
  (each worker waits its turn on a shared "next allowed time").
- ``sdk3_thread_pool``: the same with the official V3 SDK, alibabacloud-vod20170321 (the request
  snapbatch sends is this SDK's).
- ``aiolimiter_script``: an asyncio script with httpx and aiolimiter's leaky bucket, signing with V1.

Run as ``python bench/baselines.py sdk|sdk3|aiolimiter URL AK SECRET QPS THREADS IDS_FILE``; prints a JSON line
with the number of calls and their outcomes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import quote


def sdk_thread_pool(url: str, ak: str, secret: str, qps: float, threads: int, ids: list[str]) -> Counter[str]:
    from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.request import CommonRequest

    client = AcsClient(ak, secret, "cn-shanghai", timeout=30, max_retry_time=0, auto_retry=False)
    host = url.split("://", 1)[1]
    lock = threading.Lock()
    next_at = [time.monotonic()]
    outcomes: Counter[str] = Counter()

    def one(video: str) -> None:
        with lock:  # the usual hand-rolled limit: one call every 1/qps seconds
            wait = next_at[0] - time.monotonic()
            next_at[0] = max(next_at[0], time.monotonic()) + 1 / qps
        if wait > 0:
            time.sleep(wait)
        request = CommonRequest(domain=host, version="2017-03-21", action_name="SubmitSnapshotJob")
        request.set_protocol_type("http")
        request.set_method("POST")
        request.add_query_param("VideoId", video)
        request.add_query_param("Count", "1")
        try:
            client.do_action_with_exception(request)
            code = "accepted"
        except ServerException as exc:
            code = exc.get_error_code()
        except ClientException as exc:
            code = exc.get_error_code()
        with lock:
            outcomes[code] += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, ids))
    return outcomes


def sdk3_thread_pool(url: str, ak: str, secret: str, qps: float, threads: int, ids: list[str]) -> Counter[str]:
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_vod20170321.client import Client
    from alibabacloud_vod20170321.models import SubmitSnapshotJobRequest

    scheme, host = url.split("://", 1)
    client = Client(
        Config(access_key_id=ak, access_key_secret=secret, endpoint=host, protocol=scheme, region_id="cn-shanghai")
    )
    lock = threading.Lock()
    next_at = [time.monotonic()]
    outcomes: Counter[str] = Counter()

    def one(video: str) -> None:
        with lock:
            wait = next_at[0] - time.monotonic()
            next_at[0] = max(next_at[0], time.monotonic()) + 1 / qps
        if wait > 0:
            time.sleep(wait)
        try:
            client.submit_snapshot_job(SubmitSnapshotJobRequest(video_id=video, count=1))
            code = "accepted"
        except Exception as exc:  # the SDK's own error types carry the Code
            code = str(getattr(exc, "code", type(exc).__name__))
        with lock:
            outcomes[code] += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, ids))
    return outcomes


def _v1_query(ak: str, secret: str, params: dict[str, str]) -> str:
    common = {
        "Action": "SubmitSnapshotJob",
        "Version": "2017-03-21",
        "Format": "JSON",
        "AccessKeyId": ak,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": uuid.uuid4().hex,
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **params,
    }
    canonical = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(common.items()))
    to_sign = "POST&%2F&" + quote(canonical, safe="~")
    signature = base64.b64encode(hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
    return canonical + "&Signature=" + quote(signature, safe="~")


def aiolimiter_script(url: str, ak: str, secret: str, qps: float, concurrency: int, ids: list[str]) -> Counter[str]:
    import httpx
    from aiolimiter import AsyncLimiter

    outcomes: Counter[str] = Counter()

    async def main() -> None:
        limiter = AsyncLimiter(qps, 1)
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(video: str) -> None:
                async with gate, limiter:
                    response = await client.post(f"{url}/?{_v1_query(ak, secret, {'VideoId': video, 'Count': '1'})}")
                body = response.json()
                outcomes["accepted" if "SnapshotJob" in body else body.get("Code", "?")] += 1

            await asyncio.gather(*(one(v) for v in ids))

    asyncio.run(main())
    return outcomes


if __name__ == "__main__":
    kind, url, ak, secret, qps, threads, ids_file = sys.argv[1:8]
    with open(ids_file) as handle:
        ids = [line.strip() for line in handle if line.strip()]
    run = {"sdk": sdk_thread_pool, "sdk3": sdk3_thread_pool}.get(kind, aiolimiter_script)
    start = time.perf_counter()
    result = run(url, ak, secret, float(qps), int(threads), ids)
    print(json.dumps({"calls": sum(result.values()), "outcomes": dict(result), "wall_s": time.perf_counter() - start}))
