"""Frozen data shared by every layer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from snapbatch.errors import Problem

__all__ = [
    "DEFAULT_QPS",
    "DEFAULT_REGION",
    "EXTEND_TAG",
    "KEY_CHARS",
    "MAX_QPS",
    "MIN_QPS",
    "IdSource",
    "Job",
    "Loc",
    "Manifest",
    "Outcome",
    "OutcomeKind",
    "Request",
    "RequestStatus",
    "Search",
    "Variant",
    "tagged",
]

DEFAULT_QPS = 30.0
# One call every 100 s at the slowest: below that a pace is a mistake (1e-320 would never send a call, and
# durations computed from it overflow); above 30 is more than an account may make, except for the emulator.
MIN_QPS = 0.01
MAX_QPS = 30.0
DEFAULT_REGION = "cn-shanghai"
KEY_CHARS = 24  # a request key's length (hex)
# The name under which a request's key rides in UserData.Extend, so that a SnapshotComplete event names
# the request even when the answer carrying its JobId was lost.
EXTEND_TAG = "snapbatch"


@dataclass(frozen=True, slots=True)
class Loc:
    """Where something stands: a file, 1-based line and column, and a path such as ``jobs[1].videos``."""

    file: str
    line: int | None
    col: int | None
    where: str

    def problem(self, message: str, severity: str = "error") -> Problem:
        return Problem(self.file, self.line, self.col, self.where, message, severity)


@dataclass(frozen=True, slots=True)
class Search:
    """A job's videos as a SearchMedia query: listed once, then frozen into the batch's state."""

    match: str
    sort_by: str = "CreationTime:Desc"


@dataclass(frozen=True, slots=True)
class IdSource:
    """Where a job's IDs come from: inline values, or a text/CSV file read lazily."""

    kind: str  # "VideoId" or "ReferenceId": the API parameter the IDs are sent as
    loc: Loc
    inline: tuple[tuple[str, Loc], ...] | None = None
    file: Path | None = None
    column: str | None = None
    column_loc: Loc | None = None
    search: Search | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    """One final parameter set of a job (one per template): wire-ready strings, without the ID."""

    template: str | None
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    loc: Loc
    ids: IdSource
    variants: tuple[Variant, ...]


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path
    batch: str
    region: str | None  # None: not set in the manifest (environment or default decides)
    endpoint: str | None
    qps: float
    jobs: tuple[Job, ...]
    warnings: tuple[Problem, ...] = field(default=())
    quota: str | None = None  # where runs on one key share its qps (see run/quota.py); None: not set


class Request(NamedTuple):  # a tuple: cheap to make a million of
    """One SubmitSnapshotJob call: ``params`` are exactly the API parameters sent, ID included."""

    key: str
    job: str
    template: str | None
    id_kind: str
    video: str
    params: dict[str, str]


class RequestStatus(StrEnum):
    """Where a request stands in the state file (the values are stored there and printed in reports)."""

    PENDING = "pending"  # not sent yet, or sent and certainly not made into a job: send it
    SENDING = "sending"  # its intent is committed and the call may be out; after a crash: in doubt
    SUBMITTED = "submitted"  # the service made its job
    FAILED = "failed"  # the service refused it for a reason of its own (sent again only with --retry-failed)
    IN_DOUBT = "in_doubt"  # the answer was lost: a job may exist (sent again unless --in-doubt skip)


class OutcomeKind(StrEnum):
    """What one attempt came to. Its properties are the whole rule of what the run does with it: whether
    to send again, whether it proves the credentials work, whether it counts toward an outage, and the
    status it leaves the request in. vod.client.classify decides the kind of an answer."""

    ACCEPTED = "accepted"  # a job was made
    THROTTLED = "throttled"  # over the quota: certainly no job
    TRANSIENT = "transient"  # the service failed (5xx) or could not be reached: certainly no job
    IN_DOUBT = "in_doubt"  # the answer was lost: a job may exist
    FAILED = "failed"  # this request's own fault (an unknown video, a bad parameter)
    FATAL = "fatal"  # the account's or the credentials' fault: no job, and the run stops
    # the STS token had run out and fresh credentials are at hand: certainly no job, and not the service
    # failing, so it goes again at once
    EXPIRED = "expired"
    # what answered is not VOD's API (a redirect, say): no job was made, and the run stops without blaming
    # the key
    WRONG_ENDPOINT = "wrong_endpoint"

    @property
    def retryable(self) -> bool:
        """Sending the request again may succeed (and, at worst, duplicates a job for IN_DOUBT)."""
        return self in _RETRYABLE

    @property
    def backs_off(self) -> bool:
        """A retry waits a backoff first (the service is struggling or busy); False: it goes again at once
        (paced by the limiter all the same)."""
        return self in _BACKING_OFF

    @property
    def proves_credentials(self) -> bool:
        """The service checked the signature and answered about the request itself."""
        return self in _PROVING

    @property
    def counts_toward_outage(self) -> bool:
        """A failure of the service or the path to it, not an answer about the request."""
        return self in _OUTAGE

    @property
    def status(self) -> RequestStatus:
        """The status the request takes after this outcome."""
        return _STATUS_AFTER.get(self, RequestStatus.PENDING)


_BACKING_OFF = frozenset({OutcomeKind.THROTTLED, OutcomeKind.TRANSIENT, OutcomeKind.IN_DOUBT})
_RETRYABLE = _BACKING_OFF | {OutcomeKind.EXPIRED}
_PROVING = frozenset({OutcomeKind.ACCEPTED, OutcomeKind.FAILED, OutcomeKind.THROTTLED})
_OUTAGE = frozenset({OutcomeKind.TRANSIENT, OutcomeKind.IN_DOUBT})
_STATUS_AFTER = {
    OutcomeKind.ACCEPTED: RequestStatus.SUBMITTED,
    OutcomeKind.FAILED: RequestStatus.FAILED,
    OutcomeKind.IN_DOUBT: RequestStatus.IN_DOUBT,
}

# Shorthands for the kinds, as the classifier and the tests write them.
ACCEPTED = OutcomeKind.ACCEPTED
THROTTLED = OutcomeKind.THROTTLED
TRANSIENT = OutcomeKind.TRANSIENT
IN_DOUBT = OutcomeKind.IN_DOUBT
FAILED = OutcomeKind.FAILED
FATAL = OutcomeKind.FATAL
EXPIRED = OutcomeKind.EXPIRED
WRONG_ENDPOINT = OutcomeKind.WRONG_ENDPOINT


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result, classified by the service's error Code (HTTP status only as a fallback)."""

    kind: OutcomeKind
    job_id: str | None = None
    request_id: str | None = None
    code: str | None = None
    message: str | None = None
    http_status: int | None = None


def tagged(params: Mapping[str, str], key: str) -> dict[str, str]:
    """The parameters as sent: when UserData.Extend is a mapping or absent, it carries ``key`` under
    EXTEND_TAG (the same key on every attempt); a string Extend is the user's own and is left alone."""
    result = dict(params)
    text = result.get("UserData")
    user_data = json.loads(text) if text else {}
    extend = user_data.get("Extend")
    if extend is None:
        extend = {}
    elif not isinstance(extend, dict):
        return result
    user_data["Extend"] = {**extend, EXTEND_TAG: key}
    result["UserData"] = json.dumps(user_data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return result
