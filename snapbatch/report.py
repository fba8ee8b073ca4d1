"""Everything snapbatch shows a person or a program, as strings: plans, summaries, progress, rows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from snapbatch.errors import printable
from snapbatch.manifest.expand import Survey
from snapbatch.models import Manifest, Outcome, OutcomeKind, Request, RequestStatus, tagged
from snapbatch.run.listings import ListingInfo
from snapbatch.run.quota import describe
from snapbatch.run.runner import RunResult, StopReason
from snapbatch.run.session import Progress
from snapbatch.run.state import Row
from snapbatch.vod.api import TIMESTAMP_FORMAT

__all__ = [
    "COMPLETION_WORDS",
    "REPORT_FIELDS",
    "absorbed_line",
    "duration",
    "error_label",
    "html_written_line",
    "ingested_line",
    "listing_document",
    "listing_line",
    "margin_line",
    "plan_jsonl",
    "plan_line",
    "plan_summary",
    "progress_line",
    "quota_back_line",
    "quota_paused_line",
    "quota_shared_line",
    "recovered_line",
    "reopened_line",
    "report_row",
    "run_summary",
    "second_signal_line",
    "signal_line",
    "start_line",
    "status_document",
    "status_text",
    "stop_lines",
    "summary_line",
    "unfinished_listings_line",
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
_STOPS = {
    StopReason.MAX_REQUESTS: "--max-requests reached",
    StopReason.MAX_DURATION: "--max-duration reached",
    StopReason.RETRY_BUDGET: "the run's retry budget is spent (the service keeps failing or throttling)",
    StopReason.OUTAGE: "the service looks down (many answers in a row were 5xx or lost)",
    StopReason.UNREACHABLE: "the endpoint never answered (the first calls could not connect or got no answer): "
    "check the endpoint URL, the network and any proxy or TLS interception",
    StopReason.WRONG_ENDPOINT: "what answered is not VOD's API: check the endpoint URL (or region) and any proxy in "
    "between",
    StopReason.INTERRUPTED: "interrupted",
    StopReason.QUOTA: "the shared quota could not be reached",
}
# the stops after which the last error says what went wrong
_STOPS_WITH_DETAIL = (StopReason.OUTAGE, StopReason.UNREACHABLE, StopReason.RETRY_BUDGET, StopReason.WRONG_ENDPOINT)
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


def error_label(outcome: Outcome) -> str:
    """An error in a word or two: its Code, or what happened when there is none."""
    if outcome.code:
        return outcome.code
    return "no answer" if outcome.kind == OutcomeKind.IN_DOUBT else "no connection"


def progress_line(progress: Progress) -> str:
    """done/total, rate, ETA, throttled, failures, and 5xx or lost answers (with the latest one's code); while a
    search job is being listed, how far that is; and whether sending waits for an unreachable shared quota."""
    counts, tally, elapsed_s = progress.counts, progress.tally, progress.elapsed_s
    if progress.listing is not None:
        line = listing_line(progress.listing, ongoing=True)
    else:
        rate = tally.submitted / elapsed_s if elapsed_s > 0 else 0.0
        total = sum(counts[k] for k in RequestStatus)
        left = counts["pending"] + counts["sending"] + (counts["in_doubt"] if progress.resend_in_doubt else 0)
        eta = duration(left / rate) if rate else "?"
        latest = f" (latest {error_label(tally.last_error)})" if tally.last_error is not None else ""
        line = (
            f"{counts['submitted']}/{total} submitted, {rate:.1f}/s, ETA {eta}, throttled {tally.throttled}, "
            f"failed {tally.failed}"
            + (f", errors {tally.errors}{latest}" if tally.errors else "")
            + (" (still reading the manifest)" if progress.ingesting else "")
        )
    return line + (" | paused: waiting for the shared quota" if progress.paused else "")


def margin_line(margin_s: float) -> str:
    return f"starting with the {margin_s * 1000:.0f} ms margin the last run on this key learned from throttles"


def quota_shared_line(quota: str) -> str:
    """How this run shares its key's quota: ``quota`` is "local" or the shared store's URL."""
    if quota == "local":
        return "pacing shared with the other runs on this host that use this AccessKeyId and endpoint"
    return f"pacing shared through {describe(quota)} with every run on this AccessKeyId and endpoint"


def quota_paused_line(problem: str, outage_s: float) -> str:
    return (
        f"the shared quota cannot be reached ({problem}); sending nothing until it can, retrying, for at most "
        f"{outage_s:g} s"
    )


def quota_back_line(after_s: float) -> str:
    return f"the shared quota is back after {after_s:.1f} s; sending again"


def unfinished_listings_line(jobs: Iterable[str]) -> str:
    return f"the listing of search jobs {', '.join(jobs)} is unfinished; run again to continue it"


def recovered_line(count: int, resend_in_doubt: bool) -> str:
    """What became of the calls a killed run left in flight."""
    return f"{count} requests were in flight when the last run stopped; they are in doubt and " + (
        "will be sent again" if resend_in_doubt else "are left alone (--in-doubt skip)"
    )


def start_line(batch: str, endpoint: str, key_id: str, source: str, qps: float, concurrency: int) -> str:
    return (
        f"batch {batch}: sending to {endpoint} as {key_id} ({source}), at most {qps:g} calls/s, {concurrency} in flight"
    )


def ingested_line(total: int, new: int) -> str:
    return f"{total} requests in the manifest, {new} new to the state file"


def absorbed_line(count: int) -> str:
    return f"{count} requests updated from the receiver's events"


def html_written_line(path: object, planned: int) -> str:
    return f"wrote {path}: the batch's {planned} requests at a glance, one self-contained HTML file"


def reopened_line(count: int) -> str:
    return f"{count} requests whose job failed after submission will be sent again"


def signal_line(name: str, drain_s: float) -> str:
    return f"{name}: starting no new calls, waiting up to {drain_s:g} s for those in flight (again to stop at once)"


def second_signal_line(name: str) -> str:
    return f"second {name}: stopping at once; the calls in flight are recorded as in doubt"


def stop_lines(result: RunResult, max_attempts: int) -> list[str]:
    """Why the run stopped early, and what it gave up on, for the log."""
    lines = []
    if result.fatal is not None and result.fatal.http_status is None:  # decided here: nothing was sent
        lines.append(f"stopped: {result.fatal.message}")
    elif result.fatal is not None:
        lines.append(f"stopped: the service answered {result.fatal.code}: {result.fatal.message}")
    elif result.stop_reason is not None:
        last = result.last_error
        detail = ""
        if last is not None and result.stop_reason in _STOPS_WITH_DETAIL:
            detail = f" (last error: {last.code + ': ' if last.code else ''}{last.message})"
        if result.quota_error:
            detail = f" ({result.quota_error}; nothing was sent meanwhile)"
        reason = _STOPS.get(result.stop_reason, result.stop_reason)
        lines.append(f"stopped: {reason}{detail}; the state is saved, run again to continue")
    if result.gave_up:
        lines.append(
            f"{result.gave_up} requests got no definite answer in {max_attempts} attempts; they stay pending or in "
            "doubt, with their last error in `snapbatch report`; run again to retry them"
        )
    return lines


def run_summary(batch: str, after: Mapping[str, int], result: RunResult) -> dict[str, Any]:
    """The --json document of a run."""
    return {
        "batch": batch,
        "total": sum(after[s] for s in RequestStatus),
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
    return None if t is None else time.strftime(TIMESTAMP_FORMAT, time.gmtime(t))


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
