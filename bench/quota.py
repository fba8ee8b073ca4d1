"""Quota use at qps 30, measured at the emulator: snapbatch against the ways people do it without it.

    python bench/quota.py [REQUESTS] [--repeat N]

With ``--repeat N`` only snapbatch runs, N times a scenario, and the table gives each figure's range over
the N runs (what a claim such as "0 throttled" must hold in every one of them).

For answers in 20-80 ms, in 0.8-1.5 s, and in 20-80 ms with 0-30 ms of jitter on the way to the server
(which bunches calls that left evenly): accepted calls (the baselines do not resend throttled calls,
so some are lost), accepted calls per second overall and sustained (from the second call), the busiest
1-second window and the throttled count, for `snapbatch run`, the official SDK in a 32-thread pool with
a sleep-based limit, and an asyncio script with aiolimiter. The floor is 30/s: the table says how close each gets.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _emulator import baseline, emulator, key_env, server_view, snapbatch_run
from _measure import table

SCENARIOS = (
    ("20-80 ms", ["--latency-ms", "20", "80"]),
    ("800-1500 ms", ["--latency-ms", "800", "1500"]),
    # calls reach the server after a random 0-30 ms more, as over a network: evenly sent calls bunch
    ("20-80 ms, path jitter 0-30 ms", ["--latency-ms", "20", "80", "--path-jitter-ms", "30"]),
)


def setup(root: Path, n: int) -> tuple[Path, Path]:
    ids = root / "ids.txt"
    ids.write_text("".join(f"video-{i:06d}\n" for i in range(n)))
    manifest = root / "m.yaml"
    manifest.write_text(
        "version: 1\nbatch: quota\njobs:\n  - {name: all, videos: {file: ids.txt}, params: {Count: 1}}\n"
    )
    return ids, manifest


def run_once(root: Path, command: Callable[[str, str], list[str]], emulator_args: list[str]) -> dict[str, float]:
    with emulator(root, "--qps", "30", *emulator_args) as served:
        state = str(root / f"state-{len(list(root.glob('state-*')))}.sqlite3")
        subprocess.run(
            command(served.url, state), env=key_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return server_view(served.calls())


def span(views: list[dict[str, float]], key: str, fmt: str) -> str:
    return f"{min(v[key] for v in views):{fmt}}-{max(v[key] for v in views):{fmt}}"


def repeated(n: int, repeat: int) -> None:
    """snapbatch alone, ``repeat`` runs a scenario: each figure's range over the runs."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, manifest = setup(root, n)
        for label, emulator_args in SCENARIOS:
            views = []
            for _ in range(repeat):
                views.append(run_once(root, snapbatch_command(manifest), emulator_args))
                print(f"  {label}: {views[-1]}", file=sys.stderr)
            rows.append(
                [
                    label,
                    str(repeat),
                    f"{min(v['accepted'] for v in views):.0f}/{n}",
                    span(views, "rate", ".2f"),
                    span(views, "sustained", ".2f"),
                    f"{min(v['sustained'] for v in views) / 30:.1%}-{max(v['sustained'] for v in views) / 30:.1%}",
                    span(views, "busiest", ".0f"),
                    span(views, "throttled", ".0f"),
                    f"{sum(1 for v in views if v['throttled'] == 0)}/{repeat}",
                ]
            )
    print(f"snapbatch run, {n} requests a run at qps 30, {repeat} runs a scenario; ranges over the runs")
    print(
        table(
            [
                "answers in",
                "runs",
                "fewest accepted",
                "accepted/s overall",
                "sustained/s",
                "of 30/s",
                "busiest 1 s window",
                "throttled",
                "runs with 0 throttled",
            ],
            rows,
        )
    )


def snapbatch_command(manifest: Path) -> Callable[[str, str], list[str]]:
    return lambda url, state: snapbatch_run(manifest, url, "--state", state)


def main() -> None:
    args = sys.argv[1:]
    repeat = 0
    if "--repeat" in args:
        at = args.index("--repeat")
        repeat = int(args[at + 1])
        del args[at : at + 2]
    n = int(args[0]) if args else 600
    if repeat:
        repeated(n, repeat)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids, manifest = setup(root, n)
        for label, emulator_args in SCENARIOS:
            tools = {
                "snapbatch run": snapbatch_command(manifest),
                "SDK + 32 threads + sleep limit": lambda url, state: baseline("sdk", url, 30, 32, ids),
                "asyncio + aiolimiter": lambda url, state: baseline("aiolimiter", url, 30, 64, ids),
            }
            for name, command in tools.items():
                view = run_once(root, command, emulator_args)
                rows.append(
                    [
                        label,
                        name,
                        f"{view['accepted']}/{n}",
                        f"{view['rate']:.2f}",
                        f"{view['sustained']:.2f}",
                        f"{view['sustained'] / 30:.1%}",
                        str(view["busiest"]),
                        str(view["throttled"]),
                    ]
                )
                print(f"  {rows[-1]}", file=sys.stderr)
    print(
        table(
            [
                "answers in",
                "tool",
                "accepted",
                "accepted/s overall",
                "sustained/s",
                "of 30/s",
                "busiest 1 s window",
                "throttled",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
