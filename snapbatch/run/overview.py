"""A batch at a glance, read from its state file: counts, per-job counts, failures by code with examples, and
the attempts over time in a bounded number of buckets. Everything is aggregated in SQL, so reading it takes
one pass over the requests whatever their number, and what comes out is small."""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from snapbatch.models import RequestStatus
from snapbatch.run.state import State

__all__ = [
    "MAX_BUCKETS",
    "FailureGroup",
    "JobCounts",
    "Overview",
    "Timeline",
    "bucket_width",
    "read_overview",
]

MAX_BUCKETS = 600  # a chart's bars at most: 9 h of a 1,000,000-request batch in 1-minute buckets
# bucket widths a person reads at a glance (seconds); the smallest that fits MAX_BUCKETS is used
_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_CODES = 12  # failure codes shown a stage; the rest are summed up as "other codes"
_EXAMPLES = 3  # example videos a code
_RATE_WINDOW_S = 60.0
_MIN_SPAN_S = 60


@dataclass(frozen=True, slots=True)
class JobCounts:
    """One manifest job's requests by what became of them."""

    job: str
    planned: int
    submitted: int
    completed: int
    failed_at_submit: int
    failed_after_submit: int
    in_doubt: int
    pending: int


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Requests that share an error code at one stage: 'submit' (the call was refused), 'job' (the job failed
    after it was accepted) or 'open' (the last attempt's error of a request not done yet)."""

    stage: str
    code: str
    count: int
    examples: tuple[tuple[str, str], ...]  # (video, message)


@dataclass(frozen=True, slots=True)
class Timeline:
    """Attempts over time: bucket i covers [start + i * width_s, start + (i + 1) * width_s) (epoch seconds).
    ``calls[kind][i]`` counts the attempts of that outcome kind; ``peak[kind][i]`` is its busiest second."""

    start: int
    width_s: int
    buckets: int
    calls: dict[str, list[int]] = field(default_factory=dict)
    peak: dict[str, list[int]] = field(default_factory=dict)

    def series(self, kind: str) -> list[int]:
        return self.calls.get(kind, [0] * self.buckets)


@dataclass(frozen=True, slots=True)
class Overview:
    """What `report --html` shows. ``counts``: requests of this manifest by status ('sending' folded into pending
    while a run is alive, else into in doubt), plus 'completed', 'failed_after_submit', 'processing' and 'unknown'
    of the submitted."""

    batch: str
    generated_at: float
    counts: dict[str, int]
    jobs: list[JobCounts]
    failures: list[FailureGroup]
    other_failures: dict[str, int]  # stage -> requests under codes not shown
    timeline: Timeline | None  # None: no attempt recorded (a file from before schema version 3, or nothing sent)
    qps: float | None
    running: dict[str, object] | None
    rate_per_s: float
    eta_s: float | None
    last_completed_at: float | None
    # search jobs whose list is not taken yet, so none of their requests is counted: (job, listed, total)
    unlisted: list[tuple[str, int, int | None]] = field(default_factory=list)


def bucket_width(span_s: int, max_buckets: int = MAX_BUCKETS) -> int:
    """The smallest readable bucket width (s) that shows ``span_s`` seconds in at most ``max_buckets`` bars."""
    need = max(1, math.ceil(span_s / max_buckets))
    for width in _WIDTHS:
        if width >= need:
            return width
    return math.ceil(need / 86400) * 86400


def read_overview(
    state: State, batch: str, qps: float | None, now: float | None = None, search_jobs: Collection[str] = ()
) -> Overview:
    """Everything the HTML report shows, from ``state`` (the manifest's current generation of requests);
    ``search_jobs``: the manifest's jobs whose videos come from SearchMedia."""
    now = time.time() if now is None else now
    generation = int(state.meta("generation") or 0)
    counts = state.counts()
    holder = state.holder()
    counts["planned"] = sum(counts[s] for s in RequestStatus)
    # 'sending' gets no card of its own: a live run's calls in flight are not answered yet (pending), what a
    # dead run left in flight is in doubt; the per-job table counts them the same way
    counts["in_doubt" if holder is None else "pending"] += counts["sending"]
    counts["sending"] = 0
    counts["failed_at_submit"] = counts["failed"]
    done = state.completion_counts()
    counts.update(
        completed=done["completed"],
        failed_after_submit=done["failed"],
        processing=done["processing"],
        unknown=done["unknown"],
    )
    rate = 0.0
    eta = None
    if holder is not None:
        window = max(1.0, min(_RATE_WINDOW_S, now - float(str(holder.get("started", 0)))))
        rate = state.submitted_since(now - window) / window
        left = counts["pending"] + counts["in_doubt"] + counts["sending"]
        eta = left / rate if rate > 0 else None
    recorded_qps = state.meta("qps")
    return Overview(
        batch=batch,
        generated_at=now,
        counts=counts,
        jobs=_jobs(state, generation, running=holder is not None),
        failures=_failures(state, generation),
        other_failures=_other_failures(state, generation),
        timeline=_timeline(state),
        qps=float(recorded_qps) if recorded_qps else qps,
        running=holder,
        rate_per_s=rate,
        eta_s=eta,
        last_completed_at=done["last_completed_at"],
        unlisted=_unlisted(state, search_jobs),
    )


def _unlisted(state: State, search_jobs: Collection[str]) -> list[tuple[str, int, int | None]]:
    """The search jobs whose listing is cut short or not begun: nothing of theirs is in the requests yet."""
    if not search_jobs:
        return []
    found = {str(r[0]): r[1:] for r in state.query("SELECT job, listed, total, finished_at FROM listings")}
    out = []
    for job in search_jobs:
        listed, total, finished = found.get(job, (0, None, None))
        if finished is None:
            out.append((job, int(listed), None if total is None else int(total)))
    return out


def _jobs(state: State, generation: int, *, running: bool) -> list[JobCounts]:
    rows = state.query(
        "SELECT job, COUNT(*), SUM(status = 'submitted'), SUM(status = 'submitted' AND completion = 'success'), "
        "SUM(status = 'failed'), SUM(status = 'submitted' AND completion = 'fail'), "
        "SUM(status = 'in_doubt' OR (status = 'sending' AND NOT ?)), SUM(status = 'pending' OR (status = 'sending' "
        "AND ?)) FROM requests WHERE generation = ? GROUP BY job ORDER BY MIN(seq)",
        (running, running, generation),
    )
    return [JobCounts(str(r[0]), *(int(v or 0) for v in r[1:])) for r in rows]


# each stage: the rows it covers, the code and message columns, and the code of a row without one
_STAGES = {
    "submit": ("status = 'failed'", "error_code", "error_message", "?"),
    "job": ("status = 'submitted' AND completion = 'fail'", "completion_code", "completion_message", "JobFailed"),
    "open": (
        "status IN ('pending', 'in_doubt', 'sending') AND error_code IS NOT NULL",
        "error_code",
        "error_message",
        "?",
    ),
}


def _failures(state: State, generation: int) -> list[FailureGroup]:
    groups = []
    for stage, (where, code, message, missing) in _STAGES.items():
        top = state.query(
            f"SELECT COALESCE({code}, ?), COUNT(*) FROM requests WHERE generation = ? AND {where} "
            "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
            (missing, generation, _CODES),
        )
        if not top:
            continue
        # the first few requests (manifest order) of each code, in one pass over the stage's rows
        examples: dict[str, list[tuple[str, str]]] = {}
        for c, video, text in state.query(
            f"SELECT c, video, m FROM (SELECT COALESCE({code}, ?) AS c, video, COALESCE({message}, '') AS m, "
            f"ROW_NUMBER() OVER (PARTITION BY COALESCE({code}, ?) ORDER BY seq) AS n FROM requests "
            f"WHERE generation = ? AND {where}) WHERE n <= ?",
            (missing, missing, generation, _EXAMPLES),
        ):
            examples.setdefault(str(c), []).append((str(video), str(text)))
        groups += [FailureGroup(stage, str(c), int(n), tuple(examples.get(str(c), ()))) for c, n in top]
    return groups


def _other_failures(state: State, generation: int) -> dict[str, int]:
    """Requests a stage has under the codes beyond the first _CODES (the rows the page sums up)."""
    others = {}
    for stage, (where, code, _, missing) in _STAGES.items():
        hidden = state.query(
            f"SELECT SUM(n) FROM (SELECT COUNT(*) AS n FROM requests WHERE generation = ? AND {where} "
            f"GROUP BY COALESCE({code}, ?) ORDER BY n DESC, COALESCE({code}, ?) LIMIT -1 OFFSET ?)",
            (generation, missing, missing, _CODES),
        )[0][0]
        if hidden:
            others[stage] = int(hidden)
    return others


def _timeline(state: State) -> Timeline | None:
    first, last = state.query("SELECT MIN(second), MAX(second) FROM attempt_seconds")[0]
    if first is None:
        return None
    width = bucket_width(int(last) - int(first) + 1)
    start = int(first) - int(first) % width  # buckets on round times: 10:00, 10:01, ...
    # a short run is drawn on at least a minute, so that its bars look as brief as they were
    buckets = max((int(last) - start) // width + 1, _MIN_SPAN_S // width)
    timeline = Timeline(start, width, buckets)
    for b, kind, calls, peak in state.query(
        "SELECT (second - ?) / ?, kind, SUM(calls), MAX(calls) FROM attempt_seconds GROUP BY 1, 2", (start, width)
    ):
        timeline.calls.setdefault(str(kind), [0] * buckets)[int(b)] = int(calls)
        timeline.peak.setdefault(str(kind), [0] * buckets)[int(b)] = int(peak)
    return timeline
