"""`report --html`: a batch as one self-contained HTML page (inline CSS and SVG, no script, nothing fetched when
it is opened), for a person looking at a CI artifact or a mail attachment, on a phone or on paper.

The page is made of aggregates only (run.overview), so its size does not grow with the number of requests:
charts have at most run.overview.MAX_BUCKETS bars, and the failure table a few examples a code. Every text
taken from the manifest or the state is escaped."""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Iterable

from snapbatch import __version__
from snapbatch.report import duration
from snapbatch.run.overview import FailureGroup, Overview, Timeline
from snapbatch.vod.client import fatal_hint

__all__ = ["GLANCE", "advice", "render_html"]

# the batch at a glance: (metric, label, what it means); the page marks each number with data-metric
GLANCE = (
    ("planned", "planned", "requests of the manifest"),
    ("submitted", "submitted", "accepted by VOD: a JobId"),
    ("completed", "completed", "jobs that made their snapshots"),
    ("failed_at_submit", "failed at submit", "refused by VOD: no job"),
    ("failed_after_submit", "failed after submit", "the job failed"),
    ("in_doubt", "in doubt", "answer lost: sent again next run"),
    ("pending", "pending", "not sent yet, or in flight"),
)
# outcome kinds of attempts (models.OutcomeKind values) in the errors chart: (kinds, label, colour)
_ERROR_SERIES = (
    (("throttled",), "throttled", "#e08a00"),
    (("transient",), "5xx or no connection", "#c62828"),
    (("in_doubt",), "answer lost", "#7b3fa0"),
    (("failed",), "refused (the request's fault)", "#6d6d6d"),
    (("fatal", "expired", "wrong_endpoint"), "stopped the run", "#1f1f1f"),
)
_STAGE_TITLES = {
    "submit": "Failed at submit (VOD refused the call; no job)",
    "job": "Failed after submit (the job failed)",
    "open": "Not done yet: the last attempt's error (the next run sends these again)",
}
# what to do about an error code (a prefix matches), after the run's own hints for the fatal ones
_HINTS = {
    "Throttling": "Someone else on the account is using the quota, or qps is above the account's limit. snapbatch "
    "slows down and resends these by itself; if they keep coming, lower qps in the manifest.",
    "ServiceUnavailable": "VOD failed for a moment. These are retried with backoff; run again for what is left.",
    "ServiceUnAvailable": "VOD failed for a moment. These are retried with backoff; run again for what is left.",
    "InternalError": "VOD failed for a moment. These are retried with backoff; run again for what is left.",
    "InvalidVideo.NotFound": "The video does not exist in this region: check the IDs and the manifest's region (a "
    "video is found only through its own region's endpoint). Fix them, then `snapbatch run --retry-failed`.",
    "NoSuchResource": "The video does not exist in this region: check the IDs and the manifest's region, then "
    "`snapbatch run --retry-failed`.",
    "Forbidden.IllegalStatus": "The video is not in a state that can be snapshotted (it must be UploadSucc, "
    "Normal, Checking or Blocked): wait for its upload or transcoding, then `snapbatch run --retry-failed`.",
    "MissingParameter": "The request lacks a parameter: `snapbatch plan` shows exactly what is sent; fix the "
    "manifest, then `snapbatch run --retry-failed`.",
    "InvalidParameter": "A parameter is wrong: `snapbatch plan` shows exactly what is sent; fix the manifest, then "
    "`snapbatch run --retry-failed`.",
    "Forbidden.RAM": "The RAM user lacks permission vod:SubmitSnapshotJob: grant it, then run again.",
    "InvalidSecurityToken": "The STS token is wrong or expired: get a fresh one, then run again.",
}


# an error recorded without a Code is recorded as its outcome kind (models.OutcomeKind)
_NO_CODE = {
    "in_doubt": (
        "no answer",
        "The answer was lost, so a job may exist. The next `snapbatch run` sends these "
        "again (at least once; `--in-doubt skip` leaves them for a look).",
    ),
    "transient": (
        "no connection",
        "VOD could not be reached or failed without a code. The next `snapbatch run` "
        "sends these again; check the network if there are many.",
    ),
}


def advice(stage: str, code: str) -> str:
    """What to do about requests that failed with ``code`` at ``stage`` (see overview.FailureGroup)."""
    if code in _NO_CODE:
        return _NO_CODE[code][1]
    for prefix, hint in _HINTS.items():
        if code.startswith(prefix):
            return hint
    if (fatal := fatal_hint(code)) is not None:
        return f"The account or the credentials are wrong: {fatal}. The run stops at the first one; run again."
    if stage == "job":
        return (
            "The job was accepted and failed later (the message says why: a missing source, a video in a bad "
            "state). Once the cause is fixed, `snapbatch run --resubmit-failed-jobs` sends these again."
        )
    if stage == "open":
        return "No definite answer yet; the next `snapbatch run` sends these again."
    return "See the message; `snapbatch report --only failed` lists every request with this code."


def render_html(view: Overview) -> str:
    """The whole page for ``view``."""
    e = _esc
    running = view.running
    if running:
        eta = f", ETA {duration(view.eta_s)}" if view.eta_s is not None else ""
        state_line = (
            f"Running: pid {e(running.get('pid', '?'))} on {e(running.get('host', '?'))}, "
            f"{view.rate_per_s:.1f} submitted/s over the last minute{eta}."
        )
    else:
        state_line = "Not running."
    qps = f"; limit {view.qps:g} calls/s" if view.qps else ""
    parts = [
        _HEAD.format(title=e(f"snapbatch report: {view.batch}"), css=_CSS),
        "<header>",
        f"<h1>Batch <span class=batch>{e(view.batch)}</span></h1>",
        f'<p class=sub><span id=running data-running="{"yes" if running else "no"}">{state_line}</span> '
        f"Report made {e(_utc(view.generated_at))}{qps}.</p>",
        "</header>",
        _glance(view),
        _funnel(view),
        _rate_chart(view.timeline, view.qps),
        _errors_chart(view.timeline),
        _failures(view),
        _jobs(view),
        f"<footer>snapbatch {e(__version__)}. Times in UTC. The charts cover every run recorded in this state file "
        "(attempts by the second their outcome was recorded); the counts are the manifest's requests as of its "
        "latest run.</footer>",
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _prose(text: str) -> str:
    """One of this module's own sentences, escaped, with `commands` set as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


def _num(n: int) -> str:
    return f"{n:,}"


def _pct(part: int, whole: int) -> str:
    if not whole:
        return "-"
    share = 100 * part / whole
    return f"{share:.0f}%" if share >= 10 or share == 0 else f"{share:.1f}%"


def _utc(t: float, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    return time.strftime(fmt, time.gmtime(t))


def _glance(view: Overview) -> str:
    c = view.counts
    cards = []
    for metric, label, note in GLANCE:
        value = c.get(metric, 0)
        bad = metric in ("failed_at_submit", "failed_after_submit", "in_doubt") and value
        cards.append(
            f'<div class="card{" bad" if bad else ""}"><div class=label>{label}</div>'
            f'<div class=value data-metric="{metric}">{_num(value)}</div><div class=note>{note}</div></div>'
        )
    extra = []
    if c.get("processing") or c.get("unknown"):
        extra.append(
            f"Of the submitted: {_num(c.get('processing', 0))} processing, {_num(c.get('unknown', 0))} with "
            "nothing heard yet (`snapbatch poll` asks VOD about them)."
        )
    for job, listed, total in view.unlisted:
        of = f" of about {_num(total)}" if total is not None else ""
        extra.append(
            f"Search job {job} is not listed yet ({_num(listed)} videos listed so far{of}): none of its requests "
            "is counted here; the next `snapbatch run` continues its listing."
        )
    if c.get("not_in_manifest"):
        extra.append(f"{_num(c['not_in_manifest'])} recorded requests are no longer in the manifest (not counted).")
    note = f"<p class=note>{' '.join(_prose(x) for x in extra)}</p>" if extra else ""
    return f"<section id=glance><h2>At a glance</h2><div class=cards>{''.join(cards)}</div>{note}</section>"


def _funnel(view: Overview) -> str:
    c = view.counts
    planned = c.get("planned", 0)
    steps = (("planned", planned), ("submitted", c.get("submitted", 0)), ("completed", c.get("completed", 0)))
    rows = []
    for label, value in steps:
        width = 100 * value / planned if planned else 0
        rows.append(
            f"<div class=step><div class=steplabel>{label}</div><div class=track>"
            f'<div class=fill style="width:{width:.2f}%"></div></div>'
            f"<div class=stepvalue>{_num(value)} <span class=pct>{_pct(value, planned)}</span></div></div>"
        )
    lost = (
        ("failed at submit", c.get("failed_at_submit", 0)),
        ("in doubt", c.get("in_doubt", 0)),
        ("pending", c.get("pending", 0) + c.get("sending", 0)),
        ("failed after submit", c.get("failed_after_submit", 0)),
        ("processing", c.get("processing", 0)),
        ("nothing heard", c.get("unknown", 0)),
    )
    gone = ", ".join(f"{label} {_num(n)}" for label, n in lost if n)
    between = f"<p class=note>Between the steps: {gone}.</p>" if gone else ""
    return f"<section id=funnel><h2>From planned to completed</h2>{''.join(rows)}{between}</section>"


# chart geometry: the SVG is stretched to the page's width; labels are HTML, so they stay readable on a phone
_W, _H = 1000.0, 200.0


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _bars(values: Iterable[float], top: float, base: list[float] | None = None) -> str:
    """One SVG path of bars (stacked on ``base``, which is updated), in chart coordinates."""
    values = list(values)
    width = _W / max(1, len(values))
    d = []
    for i, v in enumerate(values):
        if v <= 0:
            continue
        below = base[i] if base is not None else 0.0
        y0 = _H - _H * below / top
        h = _H * v / top
        d.append(f"M{i * width:.1f} {y0:.1f}v{-h:.1f}h{width:.2f}v{h:.1f}z")
        if base is not None:
            base[i] += v
    return "".join(d)


def _steps(values: list[float], top: float) -> str:
    width = _W / max(1, len(values))
    d = [f"M0 {_H - _H * values[0] / top:.1f}"] if values else []
    for i, v in enumerate(values):
        y = _H - _H * v / top
        d.append(f"V{y:.1f}H{(i + 1) * width:.1f}")
    return "".join(d)


def _axis(timeline: Timeline, top: float, unit: str) -> tuple[str, str]:
    """The y labels (left) and the x labels (below) of a chart, as HTML."""
    ys = "".join(f'<span style="bottom:{100 * f:.0f}%">{_esc(_short(top * f))}</span>' for f in (0.0, 0.5, 1.0))
    span = timeline.buckets * timeline.width_s
    fmt = "%H:%M:%S" if span < 600 else "%H:%M"
    if span > 2 * 86400:
        fmt = "%m-%d %H:%M"
    xs = "".join(
        f'<span style="left:{100 * f:.0f}%">{_esc(_utc(timeline.start + span * f, fmt))}</span>'
        for f in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    xs += f"<span class=date>{_esc(_utc(timeline.start, '%Y-%m-%d'))}</span>"
    return f"<div class=yaxis aria-hidden=true>{ys}<em>{_esc(unit)}</em></div>", f"<div class=xaxis>{xs}</div>"


def _short(value: float) -> str:
    if value >= 10000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 100 or value == int(value) else f"{value:.1f}"


def _chart(svg_body: str, label: str, timeline: Timeline, top: float, unit: str, legend: str) -> str:
    yaxis, xaxis = _axis(timeline, top, unit)
    svg = (
        f'<svg viewBox="0 0 {_W:.0f} {_H:.0f}" preserveAspectRatio="none" role="img" aria-label="{_esc(label)}">'
        f"<title>{_esc(label)}</title>{svg_body}</svg>"
    )
    return f"<div class=chart>{yaxis}<div class=plot>{svg}</div>{xaxis}</div><div class=legend>{legend}</div>"


def _bucket_words(width_s: int) -> str:
    return f"{width_s} s" if width_s < 60 else duration(width_s)


def _rate_chart(timeline: Timeline | None, qps: float | None) -> str:
    head = "<section id=rate><h2>Calls accepted per second, against the limit</h2>"
    if timeline is None:
        return (
            head + "<p class=note>No attempts recorded yet (or the state file predates snapbatch recording them)."
            "</p></section>"
        )
    accepted = timeline.series("accepted")
    per_s = [n / timeline.width_s for n in accepted]
    peak = timeline.peak.get("accepted", [0] * timeline.buckets)
    top = _nice_ceiling(max([*peak, *per_s, (qps or 0) * 1.1, 1]))
    body = f'<path class=accepted d="{_bars(per_s, top)}"/>'
    legend = [f"<span><i class=accepted></i>accepted, calls/s (mean of each {_bucket_words(timeline.width_s)})</span>"]
    if timeline.width_s > 1:
        body += f'<path class=peak d="{_steps([float(p) for p in peak], top)}" vector-effect="non-scaling-stroke"/>'
        legend.append("<span><i class=peak></i>busiest second</span>")
    if qps:
        y = _H - _H * qps / top
        body += f'<path class=limit d="M0 {y:.1f}H{_W:.0f}" vector-effect="non-scaling-stroke"/>'
        legend.append(f"<span><i class=limit></i>limit {qps:g}/s</span>")
    total = sum(accepted)
    over = sum(1 for p in peak if qps and p > qps)
    summary = f"{_num(total)} calls accepted" + (
        f"; {over} bucket{'s' if over != 1 else ''} had a second over the limit" if over else ""
    )
    label = f"Accepted calls per second over time, {summary}"
    return (
        head
        + _chart(body, label, timeline, top, "calls/s", "".join(legend))
        + f"<p class=note>{_esc(summary)}.</p></section>"
    )


def _errors_chart(timeline: Timeline | None) -> str:
    head = "<section id=errors><h2>Throttles and errors over time</h2>"
    if timeline is None:
        return head + "<p class=note>No attempts recorded yet.</p></section>"
    base = [0.0] * timeline.buckets
    series = []
    totals = []
    for kinds, label, colour in _ERROR_SERIES:
        values = [float(sum(v)) for v in zip(*(timeline.series(k) for k in kinds), strict=True)]
        totals.append((label, colour, int(sum(values))))
        series.append((values, colour))
    if not any(n for _, _, n in totals):
        return head + "<p class=note>None: every attempt was answered and none was refused.</p></section>"
    top = _nice_ceiling(max(sum(vs) for vs in zip(*(s for s, _ in series), strict=True)))
    body = "".join(f'<path fill="{colour}" d="{_bars(values, top, base)}"/>' for values, colour in series)
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{_esc(label)}: {_num(n)}</span>' for label, colour, n in totals if n
    )
    label = "Throttles and errors over time: " + ", ".join(f"{lab} {n}" for lab, _, n in totals if n)
    unit = f"per {_bucket_words(timeline.width_s)}"
    return head + _chart(body, label, timeline, top, unit, legend) + "</section>"


def _failures(view: Overview) -> str:
    head = "<section id=failures><h2>Failures by error code</h2>"
    if not view.failures:
        return head + "<p class=note>No failures.</p></section>"
    out = [head]
    for stage, title in _STAGE_TITLES.items():
        groups = [g for g in view.failures if g.stage == stage]
        if not groups:
            continue
        out.append(
            f"<h3>{_esc(title)}</h3><div class=scroll><table class=codes><thead><tr><th>code</th>"
            "<th class=n>requests</th><th>what to do</th><th>examples</th></tr></thead><tbody>"
        )
        out += [_failure_row(g) for g in groups]
        other = view.other_failures.get(stage)
        if other:
            out.append(
                f"<tr><td>other codes</td><td class=n>{_num(other)}</td><td colspan=2>"
                "<code>snapbatch report --format jsonl</code> lists them</td></tr>"
            )
        out.append("</tbody></table></div>")
    out.append("</section>")
    return "".join(out)


def _failure_row(group: FailureGroup) -> str:
    examples = "".join(
        f"<li><code>{_esc(video)}</code> {_esc(_clip(message))}</li>" for video, message in group.examples
    )
    label = _NO_CODE[group.code][0] if group.code in _NO_CODE else f"<code>{_esc(group.code)}</code>"
    return (
        f'<tr data-code="{_esc(group.code)}" data-stage="{group.stage}"><td>{label}</td>'
        f'<td class=n data-label="requests">{_num(group.count)}</td>'
        f"<td>{_prose(advice(group.stage, group.code))}</td>"
        f'<td data-label="for example"><ul>{examples}</ul></td></tr>'
    )


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


_JOB_COLUMNS = (
    ("planned", "planned"),
    ("submitted", "submitted"),
    ("completed", "completed"),
    ("failed_at_submit", "failed at submit"),
    ("failed_after_submit", "failed after submit"),
    ("in_doubt", "in doubt"),
    ("pending", "pending"),
)


def _jobs(view: Overview) -> str:
    head = "".join(f"<th class=n>{label}</th>" for _, label in _JOB_COLUMNS)
    rows = []
    for job in view.jobs:
        cells = "".join(
            f'<td class=n data-col="{name}" data-label="{label}">{_num(getattr(job, name))}</td>'
            for name, label in _JOB_COLUMNS
        )
        rows.append(f'<tr data-job="{_esc(job.job)}"><th>{_esc(job.job)}</th>{cells}</tr>')
    return (
        "<section id=jobs><h2>Per job</h2><div class=scroll><table><thead><tr><th>job</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>"
    )


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="snapbatch">
<title>{title}</title>
<style>{css}</style>
</head><body>"""

_CSS = """
:root{--fg:#1b1f24;--muted:#5b6470;--line:#d8dde3;--bg:#fff;--panel:#f6f8fa;--ok:#1a7f37;--bad:#b42318}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1100px;padding:1rem;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
h1{font-size:1.5rem;margin:.2rem 0}h1 .batch{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
h2{font-size:1.1rem;margin:1.6rem 0 .6rem;border-bottom:1px solid var(--line);padding-bottom:.2rem}
h3{font-size:.95rem;margin:1rem 0 .4rem}
.sub,.note,footer{color:var(--muted);font-size:.9rem}
footer{margin-top:2rem;border-top:1px solid var(--line);padding-top:.6rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(9.5rem,1fr));gap:.6rem}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:.6rem .7rem}
.card .label{font-size:.8rem;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
.card .value{font-size:1.6rem;font-weight:650;font-variant-numeric:tabular-nums}
.card .note{font-size:.78rem}
.card.bad .value{color:var(--bad)}
.step{display:grid;grid-template-columns:6.5rem 1fr 9rem;align-items:center;gap:.6rem;margin:.3rem 0}
.track{background:var(--panel);border:1px solid var(--line);border-radius:4px;height:1.3rem;overflow:hidden}
.fill{background:#2f6fdf;height:100%}
.stepvalue{font-variant-numeric:tabular-nums;text-align:right}.pct{color:var(--muted);font-size:.85rem}
.chart{position:relative;margin:1.6rem 0 2.6rem 3rem}
.plot{height:200px;border-left:1px solid var(--line);border-bottom:1px solid var(--line)}
.plot svg{display:block;width:100%;height:100%}
.yaxis{position:absolute;left:-3rem;top:0;bottom:0;width:2.7rem;font-size:.75rem;color:var(--muted)}
.yaxis span{position:absolute;right:0;transform:translateY(50%)}
.yaxis em{position:absolute;top:-1.2rem;left:0;font-style:normal;white-space:nowrap}
.xaxis{position:relative;height:1.2rem;font-size:.75rem;color:var(--muted)}
.xaxis span{position:absolute;top:.2rem;transform:translateX(-50%);white-space:nowrap}
.xaxis span:first-child{transform:none}.xaxis span:nth-child(5){transform:translateX(-100%)}
.xaxis span.date{left:0;top:1.3rem;transform:none}
.legend{display:flex;flex-wrap:wrap;gap:.3rem 1rem;font-size:.85rem;margin-top:-.8rem}
.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-.05rem;border-radius:2px}
path.accepted,i.accepted{fill:#2f6fdf;background:#2f6fdf}
path.peak{fill:none;stroke:#0b3a8c;stroke-width:1.2}i.peak{background:#0b3a8c;height:2px!important}
path.limit{fill:none;stroke:var(--bad);stroke-width:1.5;stroke-dasharray:6 4}
i.limit{background:var(--bad);height:2px!important}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{border-bottom:1px solid var(--line);padding:.35rem .5rem;text-align:left;vertical-align:top}
thead th{background:var(--panel);font-weight:600}thead th.n{white-space:normal}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;overflow-wrap:anywhere}
table.codes ul{margin:0;padding-left:1rem}table.codes td:nth-child(3){min-width:14rem}
table.codes td:first-child{min-width:12.5rem}table.codes td:first-child code{word-break:normal;overflow-wrap:anywhere}
@media (max-width:600px){body{padding:.6rem;font-size:14px}.step{grid-template-columns:5.2rem 1fr 6.5rem}
.card .value{font-size:1.3rem}.chart{margin-left:2.4rem}.yaxis{left:-2.4rem;width:2.1rem}
th,td{padding:.3rem .3rem}
table.codes thead,#jobs thead{display:none}table.codes tr,#jobs tr{display:block;border-bottom:1px solid var(--line);
padding:.4rem 0}table.codes td,#jobs td,#jobs tbody th{display:block;border:none;padding:.1rem 0;min-width:0!important}
table.codes td.n{text-align:left}#jobs tbody th{font-size:1rem}
#jobs td{display:flex;justify-content:space-between;max-width:20rem}
[data-label]::before{content:attr(data-label) ": ";color:var(--muted)}
.xaxis span:nth-child(2),.xaxis span:nth-child(4){display:none}}
@media print{body{max-width:none;padding:0;font-size:11pt}section{break-inside:avoid}
.cards{grid-template-columns:repeat(4,1fr)}.card,.track,thead th{background:none}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}.scroll{overflow:visible}}
"""
