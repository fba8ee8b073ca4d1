"""Credentials for the length of a run: a fixed AccessKey, or STS credentials renewed before they expire.

The client asks its provider for credentials as it signs each attempt. ``current()`` does no I/O:
renewal happens in a worker thread, started by a background task (``keep_fresh``) well before the
expiry, so a due call never waits on a token exchange. Only when the credentials have run out anyway
(the exchange kept failing) does a call wait for a renewal instead of sending what the service would
refuse. The secret and the token never appear in a message built here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import anyio

from snapbatch.errors import CredentialsError, printable
from snapbatch.vod.api import TIMESTAMP_FORMAT
from snapbatch.vod.credentials import Credentials

__all__ = ["CredentialsProvider", "Fetch", "RenewingCredentials", "StaticCredentials", "redact"]

# credentials this close to their expiry (by this machine's clock; a tenth of their life when that is
# shorter) are not sent: the answer would be InvalidSecurityToken.Expired
EXPIRY_GUARD_S = 1.0
# no more than one exchange a second on the source's account of the expiry: credentials that arrive already
# expired by this machine's clock (it runs ahead) would otherwise be exchanged again at every call
MIN_RENEW_INTERVAL_S = 1.0
RENEW_HINT = (
    "for runs longer than a token lives, let snapbatch renew credentials itself: pip install 'snapbatch[aliyun]' "
    "and use a RamRoleArn, EcsRamRole or OIDC source (README: Credentials in production)"
)

Fetch = Callable[[], tuple[Credentials, float | None]]
"""Blocking: fresh credentials and their expiry (seconds since the epoch; None: they do not expire)."""


class CredentialsProvider(Protocol):
    """Where a run's client gets its credentials, each time it signs."""

    source: str

    def current(self) -> Credentials:
        """The credentials to sign with now; never blocks."""
        ...

    async def usable(self) -> Credentials:
        """The current credentials or, when they are known to have expired, renewed ones."""
        ...

    async def renew(self, rejected_token: str | None) -> Credentials:
        """Fresh credentials after the service said those with ``rejected_token`` expired; CredentialsError
        when none can be had."""
        ...

    async def keep_fresh(self) -> None:
        """Renew ahead of expiry until cancelled (returns at once for credentials that do not expire)."""
        ...


class StaticCredentials:
    """A fixed AccessKey (and STS token): nothing to renew; an expired token stops the run."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.source = credentials.source

    def current(self) -> Credentials:
        return self.credentials

    async def usable(self) -> Credentials:
        return self.credentials

    async def renew(self, rejected_token: str | None) -> Credentials:
        raise CredentialsError(
            f"the STS token given ({self.source}) has expired; put a fresh one there and run again (the state "
            f"is saved: the run resumes where it stopped); {RENEW_HINT}"
        )

    async def keep_fresh(self) -> None:
        return


class RenewingCredentials:
    """Credentials from ``fetch`` (a token exchange), renewed in a worker thread before they expire.

    Call ``prime()`` once (blocking) before the run, then run ``keep_fresh()`` beside it."""

    def __init__(
        self,
        fetch: Fetch,
        source: str,
        *,
        wall: Callable[[], float] = time.time,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.source = source
        self._fetch, self._wall, self._log = fetch, wall, log
        self._credentials: Credentials | None = None
        self._expires_at: float | None = None
        self._guard_s = EXPIRY_GUARD_S
        self._next_at = 0.0
        self._fetched_at = float("-inf")
        self._skew_logged = False
        self._failures = 0
        self._last_error = ""
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self.renewals = 0  # credentials replaced during the run, for logs and tests

    @property
    def expires_at(self) -> float | None:
        return self._expires_at

    def prime(self) -> Credentials:
        """The first credentials, fetched now; CredentialsError saying why when the exchange fails."""
        try:
            credentials, expires_at = self._fetch()
        except Exception as exc:  # the library raises whatever its HTTP stack raised: report them all
            raise CredentialsError(f"cannot get credentials from {self.source}: {describe(exc)}") from None
        self._accept(credentials, expires_at)
        return credentials

    def current(self) -> Credentials:
        if self._credentials is None:
            raise CredentialsError(f"credentials from {self.source} were never fetched (prime() first)")
        return self._credentials

    async def usable(self) -> Credentials:
        credentials = self.current()
        now = self._wall()
        if self._expires_at is None or now < self._expires_at - self._guard_s:
            return credentials
        if now - self._fetched_at < MIN_RENEW_INTERVAL_S:
            return credentials  # just fetched: the service judges them (an expired answer renews)
        await self._renew_from(credentials.security_token)
        renewed = self.current()
        if renewed.security_token == credentials.security_token:
            raise CredentialsError(
                f"the credentials from {self.source} expired at {_iso(self._expires_at)} and could not be "
                f"renewed ({self._last_error or 'the source handed back the same ones'}); the state is saved: "
                "fix the source and run again"
            )
        return renewed

    async def renew(self, rejected_token: str | None) -> Credentials:
        current = self.current()
        if current.security_token != rejected_token:
            return current  # already renewed since that call was signed
        # (a service that keeps refusing fresh credentials costs each request its max_attempts, no more)
        await self._renew_from(rejected_token)
        renewed = self.current()
        if renewed.security_token == rejected_token:
            until = f" (valid until {_iso(self._expires_at)} by this machine's clock)" if self._expires_at else ""
            raise CredentialsError(
                f"the service says the STS token from {self.source} has expired, and no fresh one could be had"
                f"{until}: {self._last_error or 'the source handed back the same one'}; check this machine's "
                "clock and the source, then run again (the state is saved)"
            )
        return renewed

    def wake(self) -> None:
        """Have ``keep_fresh`` look at the clock again now (it jumped: a resumed machine, a test)."""
        self._wake.set()

    async def keep_fresh(self) -> None:
        if self._expires_at is None:
            return
        while True:
            self._wake = anyio.Event()
            with anyio.move_on_after(max(0.0, self._next_at - self._wall())):
                await self._wake.wait()
            if self._wall() >= self._next_at:
                async with self._lock:
                    await self._attempt()

    async def _renew_from(self, stale_token: str | None) -> None:
        async with self._lock:  # one exchange at a time; whoever waited finds it done
            if self.current().security_token == stale_token:
                await self._attempt()

    async def _attempt(self) -> None:
        old = self.current()
        try:
            credentials, expires_at = await anyio.to_thread.run_sync(self._fetch, abandon_on_cancel=True)
        except Exception as exc:  # the library raises whatever its HTTP stack raised: retry them all
            self._failures += 1
            self._last_error = describe(exc)
            now = self._wall()
            left = (self._expires_at or now) - now
            self._next_at = now + max(1.0, min(2.0**self._failures, 60.0, left / 4))
            if self._failures == 1 or self._failures % 10 == 0:
                self._log(
                    f"cannot renew credentials from {self.source} ({self._last_error}); the current ones are "
                    f"valid until {_iso(self._expires_at)}, trying again in {self._next_at - now:.0f} s"
                )
            return
        self._failures = 0
        self._last_error = ""
        self._accept(credentials, expires_at)
        if credentials.security_token != old.security_token:
            self.renewals += 1
            self._log(f"credentials renewed from {self.source}, valid until {_iso(expires_at)}")

    def _accept(self, credentials: Credentials, expires_at: float | None) -> None:
        now = self._wall()
        fresh = self._credentials is None or credentials.security_token != self._credentials.security_token
        self._credentials, self._expires_at = credentials, expires_at
        self._fetched_at = now
        if expires_at is None:
            self._next_at = float("inf")
            self._wake.set()
            return
        if fresh and expires_at - now <= EXPIRY_GUARD_S and not self._skew_logged:
            self._skew_logged = True
            self._log(
                f"the credentials from {self.source} expire at {_iso(expires_at)}, which is already past or "
                f"imminent by this machine's clock ({_iso(now)}); check this machine's clock (NTP)"
            )
        if fresh:
            self._guard_s = min(EXPIRY_GUARD_S, max(0.0, expires_at - now) / 10)
            self._next_at = now + (expires_at - now) * 2 / 3  # a third of their life left as a margin
        else:  # the source still hands out the same ones (a metadata service rotates late): look again, more
            # often as the expiry nears
            self._next_at = now + max(1.0, min(60.0, (expires_at - now) / 4))
        self._next_at = max(self._next_at, now + MIN_RENEW_INTERVAL_S)
        self._wake.set()


_QUERY = re.compile(r"\?[^\s'\"]*")
_SECRET_NAMES = "AccessKeySecret|SecurityToken|Signature|OIDCToken|access_key_secret|sts_token|security_token"
_SECRET_FIELD = re.compile(rf"""(["']?(?:{_SECRET_NAMES})["']?\s*[:=]\s*)(["']?)[^"'&,\s}}]*""", re.IGNORECASE)
_SECRET_ELEMENT = re.compile(rf"<({_SECRET_NAMES})>[^<]*</\1>", re.IGNORECASE)  # an XML answer quoted whole
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]*@", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` without query strings (the library's errors quote signed URLs), a URL's user:password, or
    secret-named fields (JSON, key=value or XML)."""
    text = _USERINFO.sub(r"\1***@", _QUERY.sub("?…", text))
    text = _SECRET_ELEMENT.sub(lambda m: f"<{m.group(1)}>***</{m.group(1)}>", text)
    return _SECRET_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


def describe(exc: BaseException) -> str:
    """One line about ``exc`` for a message, with nothing secret in it."""
    # escaped too: the text may quote a server's answer or a configuration file's value
    detail = printable(redact(" ".join(str(exc).split())))
    if len(detail) > 300:
        detail = detail[:297] + "..."
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _iso(t: float | None) -> str:
    if t is None:
        return "never"
    return datetime.fromtimestamp(t, UTC).strftime(TIMESTAMP_FORMAT)
