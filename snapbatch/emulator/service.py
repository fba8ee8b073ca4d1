"""A local ApsaraVideo VOD endpoint: checks signatures like the service, enforces the per-second limit,
answers SubmitSnapshotJob and GetJobDetail with the real shapes, and injects faults on request.

Faithful to the documented service (../shared/reference/vod-api.md), not to snapbatch's client: it accepts
any correctly signed V1 or V3 request, including the official SDKs'. ``Emulator.handle`` is the whole
service logic, independent of sockets; ``server.serve`` puts an HTTP/1.1 server in front of it.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import os
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from snapbatch.emulator.catalogue import Catalogue, CatalogueError
from snapbatch.emulator.sts import CREDENTIALS_URI_PATH, STS_ACTIONS, STS_VERSION, Sts, StsConfig, StsError
from snapbatch.vod.api import API_VERSION, REFERENCE_ID, TIMESTAMP_FORMAT
from snapbatch.vod.signing import (
    EMPTY_SHA256,
    parse_authorization,
    sign_v1,
    sign_v3,
    v1_string_to_sign,
    v3_string_to_sign,
)

__all__ = [
    "DROP_AFTER",
    "DROP_BEFORE",
    "KEEP_CALLS",
    "Emulator",
    "EmulatorConfig",
    "Reply",
    "busiest_window",
    "load_videos",
    "rate_at_server",
]

DROP_BEFORE = "drop-before"  # close the connection without an answer; no job is made
DROP_AFTER = "drop-after"  # make the job, then close the connection without an answer
SKEW_S = 15 * 60
KEEP_CALLS = 100_000  # the most recent calls ``Emulator.calls`` keeps (the log file keeps every one)
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_STATUS = {
    "InvalidAccessKeyId.NotFound": 404,
    "InvalidAccessKeyId.Inactive": 400,
    "SignatureDoesNotMatch": 400,
    "InvalidTimeStamp.Expired": 400,
    "InvalidTimeStamp.Format": 400,
    "SignatureNonceUsed": 400,
    "InvalidSecurityToken.Malformed": 400,
    "InvalidSecurityToken.Expired": 400,
    "InvalidSecurityToken.MismatchWithAccessKey": 400,
    "Forbidden.RAM": 403,
    "Forbidden": 403,
    "OperationDenied.Suspended": 400,
    "Throttling.User": 400,
    "Throttling": 400,
    "Throttling.Api": 400,
    "ServiceUnavailable": 503,
    "InternalError": 500,
    "InvalidVideo.NotFound": 404,
    "NoSuchResource": 404,
    "Forbidden.IllegalStatus": 400,
    "MissingParameter": 400,
    "InvalidParameter": 400,
    "InvalidAction.NotFound": 404,
    "InvalidVersion": 400,
    "UnsupportedHTTPMethod": 400,
}
_SPRITE_FIELDS = {"CellWidth", "CellHeight", "Padding", "Margin", "Color", "Columns", "Lines", "KeepCellPic"}
_SECRET_PARAMS = ("Signature", "SecurityToken", "OIDCToken")
_ID_MASK = (1 << 48) - 1
_LOG_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # one encoder, not one a call


@dataclass
class EmulatorConfig:
    """What the emulator accepts and how it misbehaves. ``credentials``: AccessKeyId -> (secret, token)."""

    credentials: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    qps: float = 30.0
    latency_ms: tuple[float, float] = (0.0, 0.0)
    # each request reaches the "gateway" after a random 0..path_jitter_ms delay, as over a real network,
    # so calls that left evenly spaced may arrive bunched
    path_jitter_ms: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)  # error Code, DROP_BEFORE or DROP_AFTER -> rate
    videos: Mapping[str, str | None] | None = None  # VideoId -> ReferenceId; None: every video exists
    job_seconds: float = 2.0  # a job is Processing this long, then Success (or Fail), and its event is due
    job_fail_rate: float = 0.0  # share of jobs that fail after they were accepted (asynchronously)
    # where SnapshotComplete goes when the job's UserData.MessageCallback names no URL (SetMessageCallback)
    callback_url: str | None = None
    callback_auth_key: str | None = None  # sign callbacks (X-VOD-TIMESTAMP / X-VOD-SIGNATURE) with this key
    callback_drop_rate: float = 0.0  # share of events lost for good (as if all 3 tries failed)
    callback_duplicate_rate: float = 0.0  # share of events delivered twice
    callback_retry_s: float = 1.0  # pause between the 3 tries of a delivery the receiver did not accept
    seed: int | None = None
    # AccessKeyId -> wall-clock time its STS token expires (InvalidSecurityToken.Expired from then on)
    expiries: dict[str, float] = field(default_factory=dict)
    # AccessKeyId -> the account whose per-second limit its calls count against (default: the key's own)
    accounts: dict[str, str] = field(default_factory=dict)
    sts: StsConfig | None = None  # also act as STS (AssumeRole, AssumeRoleWithOIDC, a credentials URI)
    # read API parameters from the query string only, as a gateway that ignores form bodies would (a form
    # body still counts for the V3 body hash); the official SDKs and snapbatch send none
    query_only: bool = False
    catalogue: Catalogue | None = None  # the videos SearchMedia searches (none: SearchMedia finds nothing)
    search_qps: float = 50.0  # SearchMedia's own per-account limit


@dataclass
class Reply:
    """What to do with one request: answer ``status``/``body``, or drop the connection (``drop``)."""

    status: int
    body: dict[str, Any]
    drop: bool = False
    log: dict[str, Any] = field(default_factory=dict)


def load_videos(path: Path) -> dict[str, str | None]:
    """A known-videos file: `VideoId` or `VideoId,ReferenceId` lines; blank lines and # comments skipped."""
    videos: dict[str, str | None] = {}
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        video, _, ref = line.partition(",")
        videos[video.strip()] = ref.strip() or None
    return videos


class _Error(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code, self.message = code, message


class Emulator:
    def __init__(
        self,
        config: EmulatorConfig,
        *,
        log_file: IO[str] | None = None,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        keep_calls: int = KEEP_CALLS,
    ) -> None:
        self.config = config
        self.log_file = log_file
        self.keep_calls = max(1, keep_calls)
        self.wall, self.mono = wall, mono
        self.rng = random.Random(config.seed)
        # jobs' fates draw from their own generator, so adding them left the seeded fault sequence as it was
        self.fate_rng = random.Random(None if config.seed is None else config.seed + 1)
        # the most recent calls, oldest first: trimmed back to keep_calls once it holds a tenth more, so that
        # an emulator serving for days keeps its memory
        self.calls: list[dict[str, Any]] = []
        # RequestIds and JobIds: a random base per emulator counted up, unique as uuid4 but without asking the
        # system for random bytes twice a call
        base = os.urandom(9).hex().upper()
        self._request_id_prefix = f"{base[:8]}-{base[8:12]}-4{base[12:15]}-8{base[15:18]}-"  # uuid4's shape
        self._job_id_prefix = os.urandom(10).hex()
        self._serial = itertools.count(int.from_bytes(os.urandom(6)))
        self.observers: list[Callable[[dict[str, Any]], None]] = []  # told of every call, after it is logged
        self.jobs: dict[str, dict[str, Any]] = {}
        self.completions: list[tuple[float, str]] = []  # (done_at, JobId): events not yet handed out
        self.windows: dict[tuple[str, str], deque[float]] = {}
        self.nonces: dict[str, float] = {}
        self.nonce_order: deque[tuple[float, str]] = deque()
        self.by_reference = {ref: vid for vid, ref in (config.videos or {}).items() if ref}
        self.host_id = "vod.emulator.snapbatch"
        self.sts = (
            Sts(config.sts, config.credentials, config.expiries, config.accounts, wall)
            if config.sts is not None
            else None
        )

    # -- the service ----------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """One HTTP request -> a Reply. ``headers`` have lower-case names."""
        arrived_wall, arrived = self.wall(), self.mono()
        entry: dict[str, Any] = {"t": arrived_wall, "mono": arrived}
        request_id = f"{self._request_id_prefix}{next(self._serial) & _ID_MASK:012X}"
        try:
            reply = self._handle(method, target, headers, body, entry, request_id)
        except _Error as exc:
            entry.update(code=exc.code, outcome="error")
            reply = Reply(
                _STATUS.get(exc.code, 400),
                {
                    "RequestId": request_id,
                    "HostId": self.host_id,
                    "Code": exc.code,
                    "Message": exc.message,
                    "Recommend": f"https://api.aliyun.com/troubleshoot?q={exc.code}&product=vod",
                },
            )
        entry["status"] = 0 if reply.drop else reply.status
        entry["request_id"] = request_id
        reply.log = entry
        calls = self.calls
        calls.append(entry)
        if len(calls) > self.keep_calls + self.keep_calls // 10:
            del calls[: len(calls) - self.keep_calls]
        if self.log_file is not None:
            self.log_file.write(_LOG_ENCODE(entry) + "\n")
            self.log_file.flush()
        for observer in self.observers:
            observer(entry)
        return reply

    def _handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes, entry: dict[str, Any], request_id: str
    ) -> Reply:
        if method not in ("GET", "POST"):
            raise _Error("UnsupportedHTTPMethod", f"The HTTP method {method} is not supported.")
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        params = query  # no second copy when there is no form body, as with the official SDKs and snapbatch
        if body and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params = {**query, **dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))}
        if self.sts is not None and (params.get("Action") in STS_ACTIONS or split.path == CREDENTIALS_URI_PATH):
            return self._handle_sts(method, split.path, params, entry, request_id)
        if self.config.query_only:
            params = query  # the VOD gateway of query_only: a form body's parameters do not count
        if "authorization" in headers:
            key_id, action, version = self._check_v3(method, split.path or "/", query, headers, body)
        else:
            key_id = self._check_v1(method, params)
            action, version = params.get("Action", ""), params.get("Version", "")
        entry.update(ak=key_id, action=action, params=_without_secrets(params))
        if not action:
            raise _Error(
                "MissingParameter",
                "The input parameter Action that is mandatory for processing this request is not supplied.",
            )
        if action not in ("SubmitSnapshotJob", "GetJobDetail", "SearchMedia"):
            raise _Error(
                "InvalidAction.NotFound", f"Specified api {action} is not found, please check your url and method."
            )
        if version != API_VERSION:
            raise _Error("InvalidVersion", f"Specified parameter Version {version} is not valid.")
        self._admit(key_id, action, entry["mono"])
        fault = self._fault()
        if fault not in (None, DROP_AFTER, DROP_BEFORE):
            raise _Error(fault, f"Injected fault {fault}.")
        if fault == DROP_BEFORE:
            entry["outcome"] = DROP_BEFORE
            return Reply(0, {}, drop=True)
        if action == "GetJobDetail":
            return Reply(200, self._job_detail(params, request_id, entry["t"]))
        if action == "SearchMedia":
            try:
                catalogue = self.config.catalogue or Catalogue()
                return Reply(200, catalogue.search(params, request_id, entry["mono"]))
            except CatalogueError as exc:
                raise _Error(exc.code, exc.message) from None
        video_id = self._check_submit(params)
        job_id = f"{self._job_id_prefix}{next(self._serial) & _ID_MASK:012x}"
        self.jobs[job_id] = self._new_job(video_id, entry["t"], entry["params"])
        heapq.heappush(self.completions, (self.jobs[job_id]["done_at"], job_id))
        entry.update(job_id=job_id, outcome="accepted" if fault is None else DROP_AFTER)
        if fault == DROP_AFTER:
            return Reply(0, {}, drop=True)
        return Reply(200, {"RequestId": request_id, "SnapshotJob": {"JobId": job_id}})

    def _handle_sts(
        self, method: str, path: str, params: dict[str, str], entry: dict[str, Any], request_id: str
    ) -> Reply:
        assert self.sts is not None
        action = params.get("Action") or "CredentialsURI"
        entry.update(action=action, params=_without_secrets(params))
        try:
            if path == CREDENTIALS_URI_PATH:
                body = self.sts.credentials_document()
            elif params.get("Version") != STS_VERSION:
                raise _Error("InvalidVersion", f"Specified parameter Version {params.get('Version')} is not valid.")
            elif action == "AssumeRole":
                entry["ak"] = caller = self._check_v1(method, params)
                body = self.sts.assume_role(params, caller, request_id)
            else:  # AssumeRoleWithOIDC is not signed: the OIDC token is the proof
                body = self.sts.assume_role_with_oidc(params, request_id)
        except StsError as exc:
            entry.update(code=exc.code, outcome="error")
            return Reply(exc.status, {"RequestId": request_id, "Code": exc.code, "Message": exc.message})
        entry.update(outcome="issued", issued=body.get("Credentials", body)["AccessKeyId"])
        return Reply(200, body)

    def _credentials(self, key_id: str) -> tuple[str, str | None]:
        if key_id not in self.config.credentials:
            raise _Error("InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        return self.config.credentials[key_id]

    def _check_time_and_nonce(self, stamp: str, nonce: str) -> None:
        try:
            if not _TIMESTAMP.fullmatch(stamp):
                raise ValueError(stamp)
            sent = datetime.fromisoformat(stamp).timestamp()  # ISO 8601 in UTC, as the pattern made sure
        except ValueError:  # not the format, or a month 13, an hour 25
            raise _Error(
                "InvalidTimeStamp.Format", f"Specified time stamp or date value {stamp!r} is not well formatted."
            ) from None
        if abs(sent - self.wall()) > SKEW_S:
            raise _Error("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        if not nonce:
            raise _Error(
                "MissingParameter",
                "The input parameter SignatureNonce that is mandatory for processing this request is not supplied.",
            )
        now = self.mono()
        while self.nonce_order and self.nonce_order[0][0] < now - 2 * SKEW_S:
            self.nonces.pop(self.nonce_order.popleft()[1], None)
        if nonce in self.nonces:
            raise _Error("SignatureNonceUsed", "Specified signature nonce was used already.")
        self.nonces[nonce] = now
        self.nonce_order.append((now, nonce))

    def _check_token(self, key_id: str, expected: str | None, given: str | None) -> None:
        if expected is None:
            return
        if not given:
            raise _Error("InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed or missing.")
        if not hmac.compare_digest(expected, given):
            raise _Error(
                "InvalidSecurityToken.MismatchWithAccessKey", "Specified SecurityToken mismatch with the AccessKey."
            )
        expires = self.config.expiries.get(key_id)
        if expires is not None and self.wall() >= expires:
            raise _Error("InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")

    def _check_v1(self, method: str, params: dict[str, str]) -> str:
        for name in ("AccessKeyId", "Signature", "SignatureMethod", "Timestamp"):
            if name not in params:
                raise _Error(
                    "MissingParameter",
                    f"The input parameter {name} that is mandatory for processing this request is not supplied.",
                )
        secret, token = self._credentials(params["AccessKeyId"])
        if params["SignatureMethod"] != "HMAC-SHA1" or params.get("SignatureVersion", "1.0") != "1.0":
            raise _Error("InvalidParameter", "Specified SignatureMethod or SignatureVersion is not supported.")
        signed = {k: v for k, v in params.items() if k != "Signature"}
        if not hmac.compare_digest(sign_v1(method, signed, secret), params["Signature"]):
            raise _Error(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. "
                f"server string to sign is:{v1_string_to_sign(method, signed)}",
            )
        self._check_time_and_nonce(params["Timestamp"], params.get("SignatureNonce", ""))
        self._check_token(params["AccessKeyId"], token, params.get("SecurityToken"))
        return params["AccessKeyId"]

    def _check_v3(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[str, str, str]:
        auth = parse_authorization(headers["authorization"])
        if auth is None:
            raise _Error("SignatureDoesNotMatch", "The Authorization header is not a valid ACS3-HMAC-SHA256 one.")
        key_id = auth["Credential"]
        secret, token = self._credentials(key_id)
        signed_names = auth["SignedHeaders"].split(";")
        required = {
            "host",
            "x-acs-action",
            "x-acs-version",
            "x-acs-date",
            "x-acs-signature-nonce",
            "x-acs-content-sha256",
        }
        if not required <= set(signed_names) or not set(signed_names) <= headers.keys():
            raise _Error("SignatureDoesNotMatch", "SignedHeaders must name host and the x-acs-* headers sent.")
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        if headers["x-acs-content-sha256"] != payload:
            raise _Error("SignatureDoesNotMatch", "x-acs-content-sha256 does not match the body.")
        expected = sign_v3(
            method=method,
            path=path,
            query=query,
            headers={n: headers[n] for n in signed_names},
            payload_sha256=payload,
            access_key_id=key_id,
            secret=secret,
        )
        if not hmac.compare_digest(
            expected,
            f"ACS3-HMAC-SHA256 Credential={key_id},SignedHeaders={auth['SignedHeaders']},Signature={auth['Signature']}",
        ):
            _, string_to_sign = v3_string_to_sign(method, path, query, {n: headers[n] for n in signed_names}, payload)
            raise _Error(
                "SignatureDoesNotMatch",
                "The request signature does not conform to Aliyun standards. "
                f"server string to sign is:{string_to_sign}",
            )
        self._check_time_and_nonce(headers["x-acs-date"], headers["x-acs-signature-nonce"])
        self._check_token(key_id, token, headers.get("x-acs-security-token"))
        return key_id, headers["x-acs-action"], headers["x-acs-version"]

    def _admit(self, key_id: str, action: str, now: float) -> None:
        """More than qps calls of one action by one account (by default, one AccessKeyId) in any 1-second
        window: Throttling.User."""
        window = self.windows.setdefault((self.config.accounts.get(key_id, key_id), action), deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) + 1 > (self.config.search_qps if action == "SearchMedia" else self.config.qps):
            raise _Error("Throttling.User", "Request was denied due to user flow control.")
        window.append(now)

    def _fault(self) -> str | None:
        roll = self.rng.random()
        for code, rate in self.config.faults.items():
            if roll < rate:
                return code
            roll -= rate
        return None

    def _check_submit(self, params: dict[str, str]) -> str:
        video_id, ref = params.get("VideoId"), params.get("ReferenceId")
        if not video_id and not ref:
            raise _Error(
                "MissingParameter",
                "The input parameter VideoId that is mandatory for processing this request is not supplied.",
            )
        if not video_id:
            assert ref is not None
            if not REFERENCE_ID.fullmatch(ref):
                raise _Error("InvalidParameter", "The specified parameter ReferenceId is not valid.")
            video_id = self.by_reference.get(ref) if self.config.videos is not None else f"ref:{ref}"
            if video_id is None:
                raise _Error("InvalidVideo.NotFound", "The video does not exist.")
        elif self.config.videos is not None and video_id not in self.config.videos:
            raise _Error("InvalidVideo.NotFound", "The video does not exist.")
        if "SnapshotTemplateId" not in params and "Count" not in params and "Interval" not in params:
            raise _Error("MissingParameter", "The input parameter Count or Interval is not supplied.")
        for name, low, high in (
            ("Count", 1, None),
            ("Interval", 0, None),
            ("SpecifiedOffsetTime", 0, None),
            ("Width", 8, 4096),
            ("Height", 8, 4096),
        ):
            if name in params:
                value = params[name]
                if not value.isdigit() or int(value) < low or (high is not None and int(value) > high):
                    raise _Error("InvalidParameter", f"The specified parameter {name} is not valid.")
        self._check_json(params, "SpecifiedOffsetTimes", list, _offsets_ok)
        self._check_json(params, "SpriteSnapshotConfig", dict, _sprite_ok)
        self._check_json(params, "UserData", dict, _userdata_ok)
        return video_id

    def _new_job(self, video_id: str, created: float, params: dict[str, str]) -> dict[str, Any]:
        """A job's whole fate, decided when it is made, so that GetJobDetail and the event agree."""
        config = self.config
        user_data = json.loads(params["UserData"]) if "UserData" in params else {}
        callback = user_data.get("MessageCallback") or {}
        extend = user_data.get("Extend")
        fails = self.fate_rng.random() < config.job_fail_rate
        return {
            "video": video_id,
            "created": created,
            "params": params,
            "done_at": created + config.job_seconds,
            "status": "fail" if fails else "success",
            "callback_url": callback.get("CallbackURL") or config.callback_url,
            "extend": extend if isinstance(extend, str) or extend is None else _compact(extend),
            "drop": self.fate_rng.random() < config.callback_drop_rate,
            "duplicate": self.fate_rng.random() < config.callback_duplicate_rate,
        }

    def completed(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """The jobs that completed by ``now`` and whose event was not yet handed out, oldest first."""
        done = []
        while self.completions and self.completions[0][0] <= now:
            job_id = heapq.heappop(self.completions)[1]
            done.append((job_id, self.jobs[job_id]))
        return done

    @staticmethod
    def _check_json(params: dict[str, str], name: str, kind: type, ok: Callable[[Any], bool]) -> None:
        if name not in params:
            return
        try:
            value = json.loads(params[name])
        except ValueError:
            raise _Error("InvalidParameter", f"The specified parameter {name} is not valid JSON.") from None
        if not isinstance(value, kind) or not ok(value):
            raise _Error("InvalidParameter", f"The specified parameter {name} is not valid.")

    def _job_detail(self, params: dict[str, str], request_id: str, now: float) -> dict[str, Any]:
        job_id = params.get("JobId")
        if not job_id or params.get("JobType") != "snapshot":
            raise _Error("MissingParameter", "The input parameters JobId and JobType=snapshot are required.")
        job = self.jobs.get(job_id)
        if job is None:
            raise _Error("InvalidParameter", "The specified JobId does not exist.")
        done = now >= job["done_at"]
        detail = {
            "JobId": job_id,
            "VideoId": job["video"],
            "Status": ("Success" if job["status"] == "success" else "Fail") if done else "Processing",
            "CreateTime": _iso(job["created"]),
            "Trigger": "Manual",
        }
        if done:
            detail["CompleteTime"] = _iso(job["done_at"])
        return {"RequestId": request_id, "SnapshotJobDetail": detail}


def _without_secrets(params: dict[str, str]) -> dict[str, str]:
    """``params`` for the log: itself when it holds no secret (a V3 call's never does), else a copy without."""
    if "Signature" in params or "SecurityToken" in params or "OIDCToken" in params:  # _SECRET_PARAMS
        return {k: v for k, v in params.items() if k not in _SECRET_PARAMS}
    return params


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime(TIMESTAMP_FORMAT)


def _offsets_ok(value: list[Any]) -> bool:
    return 1 <= len(value) <= 30 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def _sprite_ok(value: dict[str, Any]) -> bool:
    if not set(value) <= _SPRITE_FIELDS:
        return False
    for name in ("Columns", "Lines"):
        if name in value and not (isinstance(value[name], int) and 1 <= value[name] <= 10000):
            return False
    return value.get("KeepCellPic", "keep") in ("keep", "delete")


def _userdata_ok(value: dict[str, Any]) -> bool:
    extend = value.get("Extend")
    if extend is not None:
        text = extend if isinstance(extend, str) else json.dumps(extend, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) > 512:
            return False
    callback = value.get("MessageCallback")
    if callback is not None:
        url = callback.get("CallbackURL", "") if isinstance(callback, dict) else ""
        if not re.match(r"https?://[^\s/]+", url):
            return False
    return True


def busiest_window(times: list[float], window_s: float = 1.0) -> int:
    """The most of ``times`` that fall within any half-open window of ``window_s``."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def rate_at_server(calls: list[dict[str, Any]], window_s: float = 1.0) -> int:
    """The most calls that arrived in any window of ``window_s`` (from the emulator's own clock)."""
    return busiest_window([c["mono"] for c in calls], window_s)
