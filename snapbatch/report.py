"""Everything snapbatch shows a person or a program, as strings: plans, summaries, progress, rows."""

from __future__ import annotations

import json
from collections.abc import Iterable

from snapbatch.expand import Survey
from snapbatch.models import Manifest, Request

__all__ = ["duration", "plan_jsonl", "plan_line", "plan_summary"]


def duration(seconds: float) -> str:
    """A duration a person reads at a glance: '0.4 s', '7 min 30 s', '9 h 16 min', '2 d 3 h'."""
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


def plan_summary(manifest: Manifest, found: Survey, qps: float, endpoint: str) -> str:
    folded = found.total - found.unique
    lines = [
        f"batch {manifest.batch}: {found.unique} requests"
        + (f" ({folded} duplicate{'s' if folded != 1 else ''} folded)" if folded else ""),
        f"endpoint {endpoint}, at most {qps:g} calls/s: about {duration(found.unique / qps)} at full rate",
    ]
    width = max((len(job) for job, _ in found.per_variant), default=3)
    for job in manifest.jobs:
        for variant in job.variants:
            count = found.per_variant.get((job.name, variant.template), 0)
            template = f"template {variant.template}" if variant.template else "no template"
            lines.append(f"  {job.name:<{width}}  {template:<24} {count:>9} requests")
        if found.duplicates.get(job.name):
            lines.append(f"  {job.name:<{width}}  {'duplicates folded':<24} {found.duplicates[job.name]:>9}")
    return "\n".join(lines) + "\n"


def plan_line(request: Request) -> str:
    params = " ".join(f"{name}={value}" for name, value in request.params.items())
    return f"{request.key}  {request.job}  {params}"


def plan_jsonl(requests: Iterable[Request]) -> Iterable[str]:
    for r in requests:
        yield (
            json.dumps({"job": r.job, "key": r.key, "params": r.params}, ensure_ascii=False, separators=(",", ":"))
            + "\n"
        )
