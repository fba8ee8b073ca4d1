"""One SubmitSnapshotJob call -> an Outcome. One pooled httpx.AsyncClient; a V3 signature made per attempt."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from snapbatch import __version__
from snapbatch.errors import CredentialsError
from snapbatch.models import ACCEPTED, EXPIRED, FAILED, FATAL, IN_DOUBT, THROTTLED, TRANSIENT, Outcome
from snapbatch.vod.api import API_VERSION
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.endpoint import check_url
from snapbatch.vod.providers import CredentialsProvider, StaticCredentials
from snapbatch.vod.signing import canonical_query, sign_v3, v3_headers
from snapbatch.vod.transport import LeanTransport

__all__ = ["EXPIRED_TOKEN_CODES", "V3Auth", "VodClient", "classify", "parse_body"]

# what the OpenAPI gateway answers for an STS token past its expiry (SecurityTokenExpired is OSS's spelling,
# which VOD's upload SDKs also check for)
EXPIRED_TOKEN_CODES = {"InvalidSecurityToken.Expired", "SecurityTokenExpired"}
_TRANSIENT_CODES = {"ServiceUnavailable", "ServiceUnAvailable", "InternalError", "SignatureNonceUsed", "ServiceTimeout"}
_FAILED_CODES = {
    "InvalidVideo.NotFound",
    "NoSuchResource",
    "Forbidden.IllegalStatus",
    "InvalidParameter",
    "MissingParameter",
}
_FATAL_PREFIXES = (
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidSecurityToken",
    "Forbidden",
    "OperationDenied",
    "InvalidTimeStamp",
    "IncompleteSignature",
)
_FATAL_HINTS = {
    "SignatureDoesNotMatch": "check the AccessKey secret",
    "InvalidAccessKeyId": "check the AccessKeyId: is it deleted or disabled?",
    "InvalidSecurityToken": "the STS token is wrong or expired; get a fresh one",
    "Forbidden": "the RAM user lacks permission vod:SubmitSnapshotJob",
    "OperationDenied": "the account cannot use VOD (suspended or overdue?)",
    "InvalidTimeStamp": "this machine's clock is more than 15 minutes off; fix the time",
}


def parse_body(body: bytes) -> dict[str, Any] | None:
    """The answer's JSON object, or None when it is not one (a proxy's HTML page, say)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def classify(status: int, body: bytes, doc: dict[str, Any] | None = None) -> Outcome:
    """An HTTP answer -> Outcome, by error Code; a body that is not VOD's JSON by status alone. ``doc`` is
    the body already parsed, when the caller has it."""
    if doc is None:
        doc = parse_body(body)
    if doc is None:
        snippet = body[:120].decode("utf-8", "replace").strip().replace("\n", " ")
        message = f"HTTP {status} with a body that is not VOD's JSON: {snippet!r}"
        if 200 <= status < 300:
            return Outcome(IN_DOUBT, message=message, http_status=status)
        return Outcome(TRANSIENT if status >= 500 or status == 429 else FATAL, message=message, http_status=status)
    request_id = doc.get("RequestId")
    job = doc.get("SnapshotJob")
    if 200 <= status < 300 and isinstance(job, dict) and job.get("JobId"):
        return Outcome(ACCEPTED, job_id=str(job["JobId"]), request_id=request_id, http_status=status)
    code = str(doc.get("Code") or "")
    # one line, for logs and reports: SignatureDoesNotMatch's message carries a multi-line string to sign
    message = str(doc.get("Message") or "").replace("\r", "\\r").replace("\n", "\\n")
    if 200 <= status < 300 and not code:
        return Outcome(IN_DOUBT, request_id=request_id, message="HTTP 200 without a JobId", http_status=status)
    if code.startswith("Throttling"):
        kind = THROTTLED
    elif code in _TRANSIENT_CODES:
        kind = TRANSIENT
    elif code in _FAILED_CODES or code.startswith(("InvalidVideo", "InvalidParameter", "MissingParameter")):
        kind = FAILED
    elif code.startswith(_FATAL_PREFIXES):
        kind = FATAL
        hint = (
            next(h for p, h in _FATAL_HINTS.items() if code.startswith(p))
            if code.startswith(tuple(_FATAL_HINTS))
            else ""
        )
        message = f"{message} ({hint})" if hint else message
    elif status >= 500 or status == 429:
        kind = TRANSIENT
    else:
        kind = FAILED
    return Outcome(kind, request_id=request_id, code=code or None, message=message, http_status=status)


class _CookielessClient(httpx.AsyncClient):
    """VOD's RPC API sets no cookies, and httpx would run every answer through urllib's cookie machinery
    (about a tenth of a call's CPU): this client keeps none."""

    class _NoCookies(httpx.Cookies):
        def extract_cookies(self, response: httpx.Response) -> None:
            pass

    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        pass


class V3Auth(httpx.Auth):
    """Signs each request as it goes out (V3, ACS3-HMAC-SHA256) with a fresh nonce and timestamp, so no
    attempt is ever a replay. The request carries its action in x-acs-action and its parameters as a
    form body; the host, the x-acs-* headers and the body (through x-acs-content-sha256) are signed.
    The credentials come from ``provider`` at each attempt, so renewed ones apply to the next call."""

    def __init__(self, provider: CredentialsProvider, clock: Callable[[], datetime], nonce: Callable[[], str]) -> None:
        self.provider, self.clock, self.nonce = provider, clock, nonce

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request, self.provider.current())
        yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        self.sign(request, await self.provider.usable())
        yield request

    def sign(self, request: httpx.Request, credentials: Credentials) -> None:
        headers = v3_headers(
            host=request.headers["host"],
            action=request.headers["x-acs-action"],
            version=request.headers["x-acs-version"],
            now=self.clock(),
            nonce=self.nonce(),
            body=request.content,
            token=credentials.security_token,
        )
        headers["authorization"] = sign_v3(
            method=request.method,
            path=request.url.path,
            query=dict(request.url.params.multi_items()) if request.url.query else {},
            headers=headers,
            payload_sha256=headers["x-acs-content-sha256"],
            access_key_id=credentials.access_key_id,
            secret=credentials.access_key_secret,
        )
        del headers["host"], headers["x-acs-action"], headers["x-acs-version"]  # already on the request
        request.headers.update(headers)


class VodClient:
    """Calls VOD at ``endpoint``. Use as an async context manager. ``lean=False`` uses httpx's own transport
    (which honours HTTP(S)_PROXY), else snapbatch's LeanTransport.

    The API parameters travel as a form body, which VOD accepts for RPC calls exactly like a query string
    (and which spares httpx re-validating a long signed URL on every call); V3Auth signs every attempt."""

    def __init__(
        self,
        endpoint: str,
        credentials: Credentials | CredentialsProvider,
        *,
        max_connections: int = 64,
        timeout_s: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
        transport: httpx.AsyncBaseTransport | None = None,
        lean: bool = True,
    ) -> None:
        check_url(endpoint)
        self.endpoint = endpoint.rstrip("/")
        self._url = httpx.URL(f"{self.endpoint}/")
        provider = StaticCredentials(credentials) if isinstance(credentials, Credentials) else credentials
        self._auth = V3Auth(provider, clock, nonce)
        self._fixed_headers = [
            ("x-acs-version", API_VERSION),
            ("user-agent", f"snapbatch/{__version__}"),
            ("accept", "application/json"),
            # identity: answers are a few hundred bytes, and the lean transport passes bodies through as sent
            ("accept-encoding", "identity"),
            ("content-type", "application/x-www-form-urlencoded"),
        ]
        self._http = _CookielessClient(
            auth=self._auth,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport or (LeanTransport(max_connections=max_connections) if lean else None),
        )

    def request(self, action: str, params: Mapping[str, str]) -> httpx.Request:
        """The unsigned request for one attempt of ``action``: the parameters as a form body."""
        body = canonical_query(params).encode()  # the same percent-encoding a form body takes
        headers = [("x-acs-action", action), *self._fixed_headers]
        return httpx.Request("POST", self._url, headers=headers, content=body)

    def signed_request(self, action: str, params: Mapping[str, str]) -> httpx.Request:
        """The request exactly as one attempt sends it, signed."""
        return next(self._auth.auth_flow(self.request(action, params)))

    async def __aenter__(self) -> VodClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, action: str, params: Mapping[str, str]) -> tuple[Outcome, dict[str, Any] | None]:
        """One attempt; the Outcome and, when the answer was JSON, the parsed body."""
        try:
            response = await self._http.send(self.request(action, params))
        except CredentialsError as exc:  # expired, and no fresh ones could be had: nothing was sent, no code
            return Outcome(FATAL, code=None, message=str(exc)), None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return Outcome(TRANSIENT, code=None, message=f"{type(exc).__name__}: {exc}"), None
        except httpx.TransportError as exc:  # sent, or partly sent, and no answer: a job may exist
            detail = str(exc) or "no answer"
            return Outcome(IN_DOUBT, code=None, message=f"{type(exc).__name__}: {detail}"), None
        doc = parse_body(response.content)
        outcome = classify(response.status_code, response.content, doc)
        if outcome.code in EXPIRED_TOKEN_CODES:
            outcome = await self._renewed(outcome, response.request.headers.get("x-acs-security-token"))
        return outcome, doc

    async def _renewed(self, outcome: Outcome, token: str | None) -> Outcome:
        """An expired-token answer: EXPIRED (send again) once fresh credentials are at hand, else FATAL
        saying what to do."""
        try:
            fresh = await self._auth.provider.renew(token)
        except CredentialsError as exc:
            return Outcome(
                FATAL,
                request_id=outcome.request_id,
                code=outcome.code,
                message=str(exc),
                http_status=outcome.http_status,
            )
        return Outcome(
            EXPIRED,
            request_id=outcome.request_id,
            code=outcome.code,
            message=f"the STS token had expired; sending again with fresh credentials from {fresh.source}",
            http_status=outcome.http_status,
        )

    async def submit(self, params: Mapping[str, str]) -> Outcome:
        """SubmitSnapshotJob with exactly ``params`` (as `plan` shows them)."""
        outcome, _ = await self.call("SubmitSnapshotJob", params)
        return outcome

    async def job_status(self, job_id: str) -> str | None:
        """GetJobDetail's Status (Processing, Success, Fail) for a snapshot job, or None when unknown."""
        _, body = await self.call("GetJobDetail", {"JobId": job_id, "JobType": "snapshot"})
        detail = (body or {}).get("SnapshotJobDetail")
        return str(detail.get("Status")) if isinstance(detail, dict) else None

    async def job_detail(self, job_id: str) -> tuple[Outcome, dict[str, Any] | None]:
        """GetJobDetail for a snapshot job: (accepted, SnapshotJobDetail) when answered, else the error's
        Outcome (throttled, transient, failed: the service does not know the job, fatal) and None."""
        outcome, body = await self.call("GetJobDetail", {"JobId": job_id, "JobType": "snapshot"})
        detail = (body or {}).get("SnapshotJobDetail")
        if outcome.http_status == 200 and isinstance(detail, dict):
            return Outcome(ACCEPTED, job_id=job_id, request_id=outcome.request_id, http_status=200), detail
        return outcome, None
