"""Everything snapbatch shows a person or a program, as strings: plans, summaries, progress, rows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from snapbatch.errors import printable
from snapbatch.manifest.expand import Survey
from snapbatch.models import Manifest, Request, tagged
from snapbatch.run.listings import ListingInfo
from snapbatch.run.runner import RunResult
from snapbatch.run.state import Row

__all__ = [
    "COMPLETION_WORDS",
    "REPORT_FIELDS",
    "duration",
    "listing_document",
    "listing_line",
    "plan_jsonl",
    "plan_line",
    "plan_summary",
    "progress_line",
    "report_row",
    "run_summary",
    "status_document",
    "status_text",
    "summary_line",
]

REPORT_FIELDS = (
    "job",
    "key",
    "id_kind",
    "video",
    "status",
    "job_id",
    "request_id",
    "error_code",
    "error_message",
    "attempts",
    "submitted_at",
    "completion",
    "completed_at",
    "completion_code",
    "completion_message",
    "snapshot_count",
    "snapshot_url",
)
# what became of a submitted request's job, as `status` and `report` say it
COMPLETION_WORDS = {None: "unknown", "processing": "processing", "success": "completed", "fail": "failed"}
_STATUSES = ("pending", "sending", "submitted", "failed", "in_doubt")
_CENTURY_S = 100 * 365.25 * 86400


def duration(seconds: float) -> str:
    """A duration a person reads at a glance: '0.4 s', '7 min 30 s', '9 h 16 min', '2 d 3 h'; whatever the
    number (a huge or infinite one from a tiny rate included), never an error."""
    if not seconds < _CENTURY_S:  # also inf and nan
        return "over 100 years"
    if seconds < 0.05:
        return "under 0.1 s"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _about(estimate: str) -> str:
    return estimate if estimate.startswith("under") else f"about {estimate}"


def plan_summary(manifest: Manifest, found: Survey, qps: float, endpoint: str) -> str:
    folded = found.total - found.unique
    lines = [
        f"batch {manifest.batch}: {found.unique} request{'s' if found.unique != 1 else ''}"
        + (f" ({folded} duplicate{'s' if folded != 1 else ''} folded)" if folded else ""),
        f"endpoint {endpoint}, at most {qps:g} calls/s: {_about(duration(found.unique / qps))} at full rate",
    ]
    width = max((len(job.name) for job in manifest.jobs), default=3)  # search jobs not listed have no count
    for job in manifest.jobs:
        for variant in job.variants:
            count = found.per_variant.get((job.name, variant.template), 0)
            template = f"template {variant.template}" if variant.template else "no template"
            lines.append(f"  {job.name:<{width}}  {template:<24} {count:>9} request{'s' if count != 1 else ''}")
        if found.duplicates.get(job.name):
            lines.append(f"  {job.name:<{width}}  {'duplicates folded':<24} {found.duplicates[job.name]:>9}")
    return "\n".join(map(printable, lines)) + "\n"


def plan_line(request: Request) -> str:
    params = " ".join(f"{name}={value}" for name, value in tagged(request.params, request.key).items())
    return printable(f"{request.key}  {request.job}  {params}")  # an Extend or URL may hold terminal escapes


def plan_jsonl(requests: Iterable[Request]) -> Iterable[str]:
    for r in requests:
        yield (
            json.dumps(
                {"job": r.job, "key": r.key, "params": tagged(r.params, r.key)},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            + "\n"
        )


def progress_line(
    counts: Mapping[str, int],
    events: Mapping[str, int],
    elapsed_s: float,
    resend_in_doubt: bool,
    *,
    ingesting: bool,
    last_error: str | None = None,
) -> str:
    """done/total, rate, ETA, throttled, failures, and 5xx or lost answers (with the latest one's code)."""
    rate = events["submitted"] / elapsed_s if elapsed_s > 0 else 0.0
    total = sum(counts[k] for k in _STATUSES)
    left = counts["pending"] + counts["sending"] + (counts["in_doubt"] if resend_in_doubt else 0)
    eta = duration(left / rate) if rate else "?"
    return (
        f"{counts['submitted']}/{total} submitted, {rate:.1f}/s, ETA {eta}, throttled {events['throttled']}, "
        f"failed {events['failed']}"
        + (f", errors {events['errors']} (latest {last_error})" if events.get("errors") else "")
        + (" (still reading the manifest)" if ingesting else "")
    )


def run_summary(batch: str, after: Mapping[str, int], result: RunResult) -> dict[str, Any]:
    """The --json document of a run."""
    return {
        "batch": batch,
        "total": sum(after[s] for s in _STATUSES),
        "submitted": result.submitted,
        "skipped": after["submitted"] - result.submitted,
        "failed": after["failed"],
        "in_doubt": after["in_doubt"],
        "pending": after["pending"],
        "throttled": result.throttled,
        "retries": result.retries,
        "elapsed_s": round(result.elapsed_s, 3),
        "rate_per_s": round(result.submitted / result.elapsed_s, 3) if result.elapsed_s > 0 else 0.0,
        "stopped": result.stop_reason,
    }


def summary_line(s: Mapping[str, Any]) -> str:
    took = duration(s["elapsed_s"])
    return (
        f"{s['submitted']} submitted now, {s['skipped']} earlier, {s['failed']} failed, {s['in_doubt']} in doubt, "
        f"{s['pending']} pending of {s['total']}; {s['throttled']} throttled, {s['retries']} retries, "
        f"{s['rate_per_s']:.1f}/s " + (f"in {took}" if took.startswith("under") else f"over {took}")
    )


def status_document(
    batch: str,
    counts: Mapping[str, int],
    holder: Mapping[str, Any] | None,
    rate_per_s: float,
    rate_window_s: float,
    errors: list[tuple[str, int]],
    completion: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`status --json`: counts, who runs it, recent rate (over ``rate_window_s``), ETA, recent errors, and
    what became of the submitted requests' jobs."""
    left = counts["pending"] + counts["in_doubt"] + counts["sending"]
    return {
        "batch": batch,
        "counts": dict(counts),
        "running": dict(holder) if holder else None,
        "rate_per_s": round(rate_per_s, 2),
        "rate_window_s": round(rate_window_s, 1),
        "eta_s": round(left / rate_per_s) if rate_per_s and holder else None,
        "recent_errors": [{"code": c, "count": n} for c, n in errors],
        "completion": None
        if completion is None
        else {
            "completed": completion["completed"],
            "failed": completion["failed"],
            "processing": completion["processing"],
            "unknown": completion["unknown"],
            "last_completed_at": _utc(completion["last_completed_at"]),
            "failure_codes": [{"code": c, "count": n} for c, n in completion["failure_codes"]],
        },
    }


def status_text(doc: Mapping[str, Any]) -> str:
    counts, holder = doc["counts"], doc["running"]
    lines = [f"batch {doc['batch']}"]
    lines += [f"  {name:<10} {counts[name]:>10}" for name in ("submitted", "pending", "sending", "in_doubt", "failed")]
    if "new" in counts:
        lines.append(
            f"  the manifest changed since the last run: the next run adds {counts['new']} new "
            f"request{'s' if counts['new'] != 1 else ''} and drops {counts['dropped']} (kept on record)"
        )
    if counts["not_in_manifest"]:
        lines.append(f"  {counts['not_in_manifest']} recorded requests are no longer in the manifest")
    if holder:
        eta = f", ETA {duration(doc['eta_s'])}" if doc["eta_s"] is not None else ""
        lines.append(
            f"running: pid {holder.get('pid')} on {holder.get('host')}, {doc['rate_per_s']:.1f}/s over the "
            f"last {duration(doc['rate_window_s'])}{eta}"
        )
    else:
        lines.append("not running")
    for item in doc.get("listings", []):
        state = (
            f"list taken {item['taken_at']}" if item["complete"] else f"listing since {item['started_at']}, unfinished"
        )
        lines.append(f"search job {item['job']}: {item['videos']} videos, {state} (query {item['match']!r})")
    if doc["recent_errors"]:
        lines.append("recent errors: " + ", ".join(f"{e['code']} x{e['count']}" for e in doc["recent_errors"]))
    done = doc.get("completion")
    if done and counts["submitted"]:
        lines.append("jobs of the submitted requests")
        lines += [
            f"  {label:<10} {done[name]:>10}"
            for name, label in (
                ("completed", "completed"),
                ("failed", "failed"),
                ("processing", "processing"),
                ("unknown", "unknown"),
            )
        ]
        if done["failure_codes"]:
            lines.append("job failures: " + ", ".join(f"{e['code']} x{e['count']}" for e in done["failure_codes"]))
        if done["last_completed_at"]:
            lines.append(f"last completion {done['last_completed_at']}")
        if done["unknown"] or done["processing"]:
            lines.append("`snapbatch poll` asks the service about the jobs still open")
    return "\n".join(lines) + "\n"


def _utc(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _utc_text(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def listing_line(info: ListingInfo, *, ongoing: bool = False, fresh: bool = False) -> str:
    """A search job's list: being taken (page by page), just taken, or frozen earlier."""
    of = f" of {info.total}" if info.total is not None else ""
    if ongoing or not info.complete:
        return (
            f"listing job {info.job} through SearchMedia: {info.listed}{of} videos, {info.pages} pages "
            f"(started {_utc_text(info.started_at)}; resumable)"
        )
    assert info.finished_at is not None
    verb = "listed now" if fresh else "frozen"
    return (
        f"job {info.job}: {info.listed} videos {verb}, list taken {_utc_text(info.finished_at)} "
        f"(query {info.match!r}); `run --relist` lists again"
    )


def listing_document(info: ListingInfo) -> dict[str, Any]:
    """One search job's list in `status --json` and `plan`."""
    return {
        "job": info.job,
        "match": info.match,
        "sort_by": info.sort_by,
        "videos": info.listed,
        "total": info.total,
        "complete": info.complete,
        "started_at": _utc_text(info.started_at),
        "taken_at": _utc_text(info.finished_at) if info.finished_at is not None else None,
    }


def report_row(row: Row) -> dict[str, Any]:
    """One request of `report`, keyed by REPORT_FIELDS (and, for JSONL, every snapshot kind)."""
    submitted = _utc(row.submitted_at)
    snapshots = json.loads(row.snapshots) if row.snapshots else []
    # the count and URL template of the snapshots asked for; a sprite is listed in `snapshots` (JSONL)
    main = next((s for s in snapshots if s.get("type") != "SpriteSnapshot"), snapshots[0] if snapshots else {})
    return {
        "job": row.job,
        "key": row.key,
        "id_kind": row.id_kind,
        "video": row.video,
        "status": row.status,
        "job_id": row.job_id,
        "request_id": row.request_id,
        "error_code": row.error_code,
        "error_message": row.error_message,
        "attempts": row.attempts,
        "submitted_at": submitted,
        "completion": COMPLETION_WORDS[row.completion] if row.status == "submitted" else None,
        "completed_at": _utc(row.completed_at) if row.completion in ("success", "fail") else None,
        "completion_code": row.completion_code,
        "completion_message": row.completion_message,
        "snapshot_count": main.get("count"),
        "snapshot_url": main.get("url"),
        "snapshots": snapshots,
    }
