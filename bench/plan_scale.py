"""`plan` on 200k and 1M videos: seconds and peak RSS, for validate, plan --format jsonl and plan --summary.

python bench/plan_scale.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure, table

SIZES = (200_000, 1_000_000)


def write_ids(path: Path, n: int) -> None:
    """In chunks: a child forked from a big parent would count the parent's pages in its peak RSS."""
    with path.open("w") as f:
        for start in range(0, n, 10_000):
            f.write("".join(f"{i:032x}\n" for i in range(start, min(n, start + 10_000))))


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            ids = Path(tmp) / f"ids-{n}.txt"
            write_ids(ids, n)
            manifest = Path(tmp) / f"m-{n}.yaml"
            manifest.write_text(
                "version: 1\nbatch: scale\ntemplates: {thumbs: {Count: 10, Interval: 0, Width: 1280, Height: 720}}\n"
                f"jobs:\n  - {{name: all, videos: {{file: {ids.name}}}, template: thumbs}}\n"
            )
            for label, args in (
                ("validate", ["validate"]),
                ("plan --format jsonl", ["plan", "--format", "jsonl"]),
                ("plan --summary", ["plan", "--summary"]),
            ):
                m = measure([sys.executable, "-m", "snapbatch", *args, str(manifest)])
                rows.append([f"{n:,}", label, f"{m.wall_s:.1f}", f"{m.cpu_s:.1f}", f"{m.peak_rss_mb:.0f}"])
                print(f"  {n:,} {label}: {m.wall_s:.1f} s", file=sys.stderr)
    print(table(["videos", "command", "wall s", "cpu s", "peak RSS MiB"], rows))


if __name__ == "__main__":
    main()
