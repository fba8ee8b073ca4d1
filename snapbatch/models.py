"""Frozen data shared by every layer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    "Request",
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


# Outcome kinds. "accepted" made a job; "throttled" and "transient" certainly made none and may be retried;
# "in_doubt" may have made one (the answer was lost); "failed" is this request's fault; "fatal" is the
# account's or the credentials' and stops the run. "expired": the STS token had run out and fresh credentials
# are at hand: certainly no job, and not the service failing, so it goes again at once. "wrong_endpoint": what
# answered is not VOD's API (a redirect, say): no job was made, and the run stops without blaming the key.
ACCEPTED, THROTTLED, TRANSIENT, IN_DOUBT, FAILED, FATAL, EXPIRED, WRONG_ENDPOINT = (
    "accepted",
    "throttled",
    "transient",
    "in_doubt",
    "failed",
    "fatal",
    "expired",
    "wrong_endpoint",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result, classified by the service's error Code (HTTP status only as a fallback)."""

    kind: str
    job_id: str | None = None
    request_id: str | None = None
    code: str | None = None
    message: str | None = None
    http_status: int | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in (THROTTLED, TRANSIENT, IN_DOUBT, EXPIRED)


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
