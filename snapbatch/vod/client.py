"""One SubmitSnapshotJob call -> an Outcome, on httpx's own transport (one-connection pools side by side); a
V3 signature made per attempt; the request on the wire is the one the official V3 SDK sends."""

from __future__ import annotations

import json
import math
import os
import ssl
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx

from snapbatch import __version__
from snapbatch.errors import CredentialsError, UsageError
from snapbatch.models import ACCEPTED, EXPIRED, FAILED, FATAL, IN_DOUBT, THROTTLED, TRANSIENT, WRONG_ENDPOINT, Outcome
from snapbatch.vod.api import API_VERSION
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.endpoint import check_url
from snapbatch.vod.providers import CredentialsProvider, StaticCredentials
from snapbatch.vod.signing import EMPTY_SHA256, UNRESERVED, iso_timestamp, sign_v3

__all__ = [
    "EXPIRED_TOKEN_CODES",
    "USER_AGENT",
    "V3Signer",
    "VodClient",
    "classify",
    "default_tls",
    "environment_proxy",
    "fatal_hint",
    "parse_body",
    "query_string",
]

# what the OpenAPI gateway answers for an STS token past its expiry (SecurityTokenExpired is OSS's spelling,
# which VOD's upload SDKs also check for)
EXPIRED_TOKEN_CODES = {"InvalidSecurityToken.Expired", "SecurityTokenExpired"}
USER_AGENT = f"snapbatch/{__version__}"
CONNECTIONS_PER_POOL = 1
_SIGNED = frozenset({"host", "accept", "user-agent"})  # and every x-acs-* header, as the V3 SDK signs
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


def fatal_hint(code: str) -> str | None:
    """What to do about an error ``code`` that stops a run (a wrong key, a missing permission, ...), or None."""
    return next((hint for prefix, hint in _FATAL_HINTS.items() if code.startswith(prefix)), None)


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
        hint = fatal_hint(code)
        message = f"{message} ({hint})" if hint else message
    elif status >= 500 or status == 429:
        kind = TRANSIENT
    else:
        kind = FAILED
    return Outcome(kind, request_id=request_id, code=code or None, message=message, http_status=status)


def query_string(params: Mapping[str, str]) -> str:
    """The query string the official V3 SDK sends for ``params``: names sorted (its order for VOD's calls),
    form-encoded as ``urllib.parse.urlencode`` does (space is ``+``, ``*`` is ``%2A``, ``~`` stays)."""
    return "&".join(f"{_form(name)}={_form(value)}" for name, value in sorted(params.items()))


def _form(text: str) -> str:
    """``quote_plus``, which leaves unreserved characters as they are: most names and values are only that."""
    return text if UNRESERVED(text) else quote_plus(text)


def answer_outcome(response: httpx.Response) -> tuple[Outcome, dict[str, Any] | None]:
    """A complete HTTP answer -> its Outcome and, when the body is a JSON object, that object."""
    status = response.status_code
    if 300 <= status < 400:
        # VOD answers its API with 2xx, 4xx or 5xx only: a redirect (or a 304) comes from something that is
        # not VOD's API, a wrong endpoint or a proxy in between. No job was made, and the key is not to blame.
        location = response.headers.get("location")
        where = f"redirected to {location}" if location else "not an answer VOD's API gives"
        message = f"HTTP {status} from {response.request.url.host}: {where}"
        return Outcome(WRONG_ENDPOINT, message=message, http_status=status), None
    body = response.content
    doc = parse_body(body)
    if doc is None and "content-length" not in response.headers and "transfer-encoding" not in response.headers:
        # An answer framed only by the connection closing cannot be told from one cut short; VOD frames
        # its answers, so a body that is not even JSON here is a lost answer, not the service's word.
        return Outcome(
            IN_DOUBT,
            message=f"HTTP {status} without a length, ended by the connection closing: the answer may be cut short",
            http_status=status,
        ), None
    return classify(status, body, doc), doc


class V3Signer:
    """Signs each attempt (V3, ACS3-HMAC-SHA256) with a fresh nonce and timestamp, so no attempt is ever a
    replay. Like the official V3 SDK, it signs host, accept, user-agent and every x-acs-* header
    (x-acs-accesskey-id and x-acs-security-token added for STS), the query string and the empty body (through
    x-acs-content-sha256). The credentials come from ``provider`` at each attempt, so renewed ones apply to the
    next call. The headers are made here, in their final order, instead of in an ``httpx.Auth`` flow: a call
    then goes straight to the transport (see VodClient)."""

    def __init__(
        self, provider: CredentialsProvider, clock: Callable[[], datetime], nonce: Callable[[], str], host: str
    ) -> None:
        self.provider, self.clock, self.nonce, self.host = provider, clock, nonce, host
        self._second: int | None = None  # the second (since the epoch) x-acs-date was last formatted for, and how
        self._date = ""

    def _x_acs_date(self) -> str:
        now = self.clock()
        # by the instant, not the clock-face fields: a zone's 01:30 comes twice on the night clocks go back
        second = math.floor(now.timestamp())
        if second != self._second:  # formatting costs more than the rest of the date header: once a second
            self._second, self._date = second, iso_timestamp(now)
        return self._date

    def headers(self, action: str, params: Mapping[str, str], credentials: Credentials) -> list[tuple[str, str]]:
        """Every header of the attempt but Host and Content-Length (httpx puts those first), Authorization last."""
        token = credentials.security_token
        headers = [
            ("x-acs-action", action),
            *_CONSTANT_HEADERS,
            ("x-acs-date", self._x_acs_date()),
            ("x-acs-signature-nonce", self.nonce()),
            ("x-acs-content-sha256", EMPTY_SHA256),
            # The SDK names where its keys came from; keys handed to it as they are, as here, are "static".
            ("x-acs-credentials-provider", "static_sts" if token else "static_ak"),
        ]
        if token:
            headers += [("x-acs-accesskey-id", credentials.access_key_id), ("x-acs-security-token", token)]
        signed = {name: value for name, value in headers if name in _SIGNED or name.startswith("x-acs-")}
        signed["host"] = self.host
        authorization = sign_v3(
            method="POST",
            path="/",
            query=params,
            headers=signed,
            payload_sha256=EMPTY_SHA256,
            access_key_id=credentials.access_key_id,
            secret=credentials.access_key_secret,
        )
        headers.append(("authorization", authorization))
        return headers


_EMPTY_BODY = httpx.ByteStream(b"")
_CONSTANT_HEADERS = (
    ("x-acs-version", API_VERSION),
    ("user-agent", USER_AGENT),
    ("accept", "application/json"),
    # what the SDK's HTTP library (urllib3) sends: answers are a few hundred bytes
    ("accept-encoding", "identity"),
)


def default_tls() -> ssl.SSLContext:
    """The one trust store for every connection, direct or through a proxy: httpx's default, which is
    SSL_CERT_FILE or SSL_CERT_DIR when set, else certifi's bundle (as the official SDKs use)."""
    try:
        return httpx.create_ssl_context(trust_env=True)
    except OSError as exc:  # ssl.SSLError too: a file that is missing, unreadable or holds no certificate
        name = "SSL_CERT_FILE" if os.environ.get("SSL_CERT_FILE") else "SSL_CERT_DIR"
        raise UsageError(
            f"cannot load the trusted certificates {name} names ({os.environ.get(name, '')}): "
            f"{exc.strerror or exc}; point it at a PEM bundle of CA certificates, or unset it to use certifi's"
        ) from None


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for ``url`` (HTTPS_PROXY or HTTP_PROXY by its scheme, else ALL_PROXY;
    none when NO_PROXY covers its host): ``urllib.request.getproxies()``, the table httpx's ``trust_env`` reads
    too, and the standard library's NO_PROXY rule (a name covers itself and its subdomains, ``name:port`` only that
    port; ``*`` covers every host)."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    # "*" among other names turns proxies off for httpx (and curl); the standard library honours it only alone
    every = "*" in (name.strip() for name in proxies.get("no", "").split(","))
    # with the port when the URL names one: an entry "host:port" then covers that port only, as for httpx
    # (to which a default port is no port), and a plain "host" still covers every port
    where = url.host if url.port is None else f"{url.host}:{url.port}"
    if not proxy or every or urllib.request.proxy_bypass(where):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _shown(proxy: str | None) -> str:
    """A proxy URL as it may be shown: scheme, host and port, never a user name or password."""
    parts = urlsplit(proxy or "")
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ":(malformed)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


class VodClient:
    """Calls VOD at ``endpoint``. Use as an async context manager.

    Every call is what the official V3 SDK (alibabacloud-vod20170321) sends: ``POST /`` with the API
    parameters in the query string and an empty body, signed afresh for every attempt (V3Signer). The
    calls go to httpx's own transport (``AsyncHTTPTransport.handle_async_request``, its documented
    transport API): one endpoint, no redirects followed, no cookies, no auth flow, so httpx's client layer
    would only add CPU to every call. The proxy comes from the environment (HTTPS_PROXY, NO_PROXY, ...),
    chosen once for the endpoint. ``tls`` replaces the trust store (default: :func:`default_tls`)."""

    def __init__(
        self,
        endpoint: str,
        credentials: Credentials | CredentialsProvider,
        *,
        max_connections: int = 64,
        timeout_s: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        nonce: Callable[[], str] = lambda: os.urandom(16).hex(),  # as random as uuid4().hex, and cheaper
        tls: ssl.SSLContext | None = None,
    ) -> None:
        check_url(endpoint)
        self.endpoint = endpoint.rstrip("/")
        url = httpx.URL(f"{self.endpoint}/")
        self.host = url.host
        self.proxy = environment_proxy(url)
        provider = StaticCredentials(credentials) if isinstance(credentials, Credentials) else credentials
        self._signer = V3Signer(provider, clock, nonce, url.netloc.decode("ascii"))
        self._fixed_headers = ((b"Host", url.netloc), (b"Content-Length", b"0"))
        self._extensions = {"timeout": httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)).as_dict()}
        # httpcore's pool looks at every connection for every waiting request whenever a request starts or
        # ends, so its bookkeeping grows with the square of the connections: with 16 calls in flight it was a
        # third of a call's CPU. Pools side by side, each call going to the least busy, keep that flat; pools of
        # one connection cost less than pools of 4 (1.71 against 1.81 ms a call with the limit lifted, lower
        # in each of 3 interleaved rounds on the shared machine).
        verify = tls or default_tls()  # one SSL context for every pool, direct or proxied
        pools = math.ceil(max_connections / CONNECTIONS_PER_POOL)
        per_pool = math.ceil(max_connections / pools)
        try:
            self._pools = [
                httpx.AsyncHTTPTransport(
                    verify=verify,
                    limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
                    proxy=self.proxy,
                )
                for _ in range(pools)
            ]
        except (ImportError, ValueError, httpx.InvalidURL) as exc:  # the proxy the environment names: say which
            why = (
                "a SOCKS proxy needs the socksio package (pip install 'httpx[socks]')"
                if isinstance(exc, ImportError)
                else "it is not an http://, https:// or socks5:// proxy URL"
            )
            raise UsageError(
                f"cannot use the proxy the environment names for {url.scheme}:// endpoints ({_shown(self.proxy)}): "
                f"{why}; correct {url.scheme.upper()}_PROXY or ALL_PROXY, or name {self.host} in NO_PROXY"
            ) from None
        self._busy = [0] * pools

    def _request(self, action: str, params: Mapping[str, str], credentials: Credentials) -> httpx.Request:
        url = f"{self.endpoint}/?{query_string(params)}" if params else f"{self.endpoint}/"
        # The headers as httpx would complete them for content=b"" (Host and Content-Length first), given with
        # the empty body's stream: httpx then has nothing to add or normalise (a third of building a request).
        headers = [
            *self._fixed_headers,
            *((name.encode(), value.encode()) for name, value in self._signer.headers(action, params, credentials)),
        ]
        request = httpx.Request("POST", url, headers=headers, stream=_EMPTY_BODY, extensions=self._extensions)
        request.read()  # its content, b"", as content=b"" would have it
        return request

    def signed_request(self, action: str, params: Mapping[str, str]) -> httpx.Request:
        """The request exactly as one attempt sends it, signed."""
        return self._request(action, params, self._signer.provider.current())

    async def __aenter__(self) -> VodClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    async def _exchange(self, request: httpx.Request) -> tuple[httpx.Response, bytes]:
        """One request on the least busy pool; the answer and its whole body (decoded, as httpx decodes it)."""
        busy = self._busy
        index = busy.index(min(busy))
        busy[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
            try:
                body = await response.aread()
            finally:
                await response.aclose()
        finally:
            busy[index] -= 1
        response.request = request
        return response, body

    async def call(self, action: str, params: Mapping[str, str]) -> tuple[Outcome, dict[str, Any] | None]:
        """One attempt; the Outcome and, when the answer was JSON, the parsed body. Never raises for
        anything the network or the server does."""
        try:
            credentials = await self._signer.provider.usable()
        except CredentialsError as exc:  # expired, and no fresh ones could be had: nothing was sent, no code
            return Outcome(FATAL, code=None, message=str(exc)), None
        request = self._request(action, params, credentials)
        try:
            response, _ = await self._exchange(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
            url = request.url
            where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
            return Outcome(TRANSIENT, message=f"{type(exc).__name__}: cannot connect to {where}: {exc}"), None
        except (httpx.PoolTimeout, httpx.LocalProtocolError) as exc:  # nothing was sent
            return Outcome(TRANSIENT, message=f"{type(exc).__name__}: {exc}"), None
        except httpx.RequestError as exc:  # sent, or partly sent, and no usable answer: a job may exist
            return Outcome(IN_DOUBT, message=f"{type(exc).__name__}: {str(exc) or 'no answer'}"), None
        outcome, doc = answer_outcome(response)
        if outcome.code in EXPIRED_TOKEN_CODES:
            outcome = await self._renewed(outcome, credentials.security_token)
        return outcome, doc

    async def _renewed(self, outcome: Outcome, token: str | None) -> Outcome:
        """An expired-token answer: EXPIRED (send again) once fresh credentials are at hand, else FATAL
        saying what to do."""
        try:
            fresh = await self._signer.provider.renew(token)
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
