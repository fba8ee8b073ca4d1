"""SnapshotComplete events from the emulator's jobs, posted as the service does: to the job's
UserData.MessageCallback.CallbackURL or the global callback URL, signed with the auth key when one is set
(X-VOD-TIMESTAMP, X-VOD-SIGNATURE = md5("URL|timestamp|key")), at most 3 tries, each answered 200 within
5 s or failed. Faults: a share of events lost for good, a share delivered twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx

from snapbatch.emulator.service import Emulator

__all__ = ["CALLBACK_TRIES", "JOB_FAILURE_CODE", "CallbackStatistics", "Callbacks", "snapshot_event"]

CALLBACK_TRIES = 3
CALLBACK_TIMEOUT_S = 5.0
JOB_FAILURE_CODE = "SnapshotFailed"  # the emulator's own code for a job failed by --job-fail
_JOB_FAILURE_MESSAGE = "The emulator failed this job on purpose (--job-fail)."


@dataclass
class CallbackStatistics:
    delivered: int = 0  # events the receiver accepted (a duplicate counts twice)
    dropped: int = 0  # events lost on purpose (callback_drop_rate)
    failed: int = 0  # events given up after CALLBACK_TRIES tries the receiver did not accept
    attempts: int = 0  # HTTP requests made
    no_url: int = 0  # jobs with neither a per-job nor a global callback URL


def snapshot_event(job_id: str, job: dict[str, Any]) -> dict[str, Any]:
    """The SnapshotComplete event body of a completed job, as the service sends it."""
    params = job["params"]
    count = (
        int(params.get("Count", "1"))
        if "SpecifiedOffsetTimes" not in params
        else len(json.loads(params["SpecifiedOffsetTimes"]))
    )
    ok = job["status"] == "success"
    base = f"https://emulator.snapbatch.invalid/snapshot/{job['video']}/{job_id}"
    infos: list[dict[str, Any]] = [
        {
            "JobId": job_id,
            "Status": job["status"],
            "SnapshotType": "NormalSnapshot",
            "SnapshotCount": count if ok else 0,
            "SnapshotRegular": f"{base}/normal-{{SnapshotCount}}.jpg",
        }
    ]
    if "SpriteSnapshotConfig" in params:
        infos.append(
            {
                "JobId": job_id,
                "Status": job["status"],
                "SnapshotType": "SpriteSnapshot",
                "SnapshotCount": 1 if ok else 0,
                "SnapshotRegular": f"{base}/sprite-{{SnapshotCount}}.jpg",
            }
        )
    event: dict[str, Any] = {
        "EventTime": datetime.fromtimestamp(job["done_at"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "EventType": "SnapshotComplete",
        "SubType": "SpecifiedTime",
        "VideoId": job["video"],
        "Status": job["status"],
        "SnapshotInfos": infos,
    }
    if ok:
        event["CoverUrl"] = f"{base}/normal-00001.jpg"
    else:
        event["ErrorCode"], event["ErrorMessage"] = JOB_FAILURE_CODE, _JOB_FAILURE_MESSAGE
    if job["extend"] is not None:
        event["Extend"] = job["extend"]
    return event


class Callbacks:
    """Hands out the emulator's completed jobs as HTTP callbacks. ``deliver_due`` sends every event due by
    the emulator's wall clock and returns when all are delivered, dropped or given up; ``run`` does that
    forever (the `snapbatch emulator` command)."""

    def __init__(self, emulator: Emulator, *, concurrency: int = 32) -> None:
        self.emulator = emulator
        self.concurrency = concurrency
        self.stats = CallbackStatistics()

    def statistics(self) -> CallbackStatistics:
        return self.stats

    def _headers(self, url: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "user-agent": "snapbatch-emulator"}
        key = self.emulator.config.callback_auth_key
        if key:
            stamp = str(int(self.emulator.wall()))
            headers["x-vod-timestamp"] = stamp
            headers["x-vod-signature"] = hashlib.md5(f"{url}|{stamp}|{key}".encode()).hexdigest()
        return headers

    async def _post(self, client: httpx.AsyncClient, url: str, body: bytes) -> bool:
        for attempt in range(CALLBACK_TRIES):
            if attempt:
                await anyio.sleep(self.emulator.config.callback_retry_s)
            self.stats.attempts += 1
            try:
                response = await client.post(url, content=body, headers=self._headers(url))
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                return True
        return False

    async def _deliver(
        self, client: httpx.AsyncClient, job_id: str, job: dict[str, Any], slots: anyio.Semaphore
    ) -> None:
        async with slots:
            body = json.dumps(snapshot_event(job_id, job), separators=(",", ":"), ensure_ascii=False).encode()
            for _ in range(2 if job["duplicate"] else 1):
                if await self._post(client, job["callback_url"], body):
                    self.stats.delivered += 1
                else:
                    self.stats.failed += 1
                    return

    async def deliver_due(self) -> int:
        """Send the events of every job completed by now; returns how many jobs that was."""
        due = self.emulator.completed(self.emulator.wall())
        sending = []
        for job_id, job in due:
            if not job["callback_url"]:
                self.stats.no_url += 1
            elif job["drop"]:
                self.stats.dropped += 1
            else:
                sending.append((job_id, job))
        if sending:
            # one client for the whole backlog, made only when there is something to post: making one costs
            # an SSL context, which would stall the emulator's event loop on every tick
            slots = anyio.Semaphore(self.concurrency)
            timeout = httpx.Timeout(CALLBACK_TIMEOUT_S)
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client, anyio.create_task_group() as tg:
                for job_id, job in sending:
                    tg.start_soon(self._deliver, client, job_id, job, slots)
        return len(due)

    async def run(self, tick_s: float = 0.2) -> None:
        """Deliver events as their jobs complete, until cancelled."""
        while True:
            await self.deliver_due()
            await anyio.sleep(tick_s)
