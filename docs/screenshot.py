"""Make docs/report.png, the README's picture of `report --html`: the example batch (jobs.example.yaml) run
on a local emulator that knows all but two of its videos, throttles and fails some calls and some jobs,
then polled, reported and shot in Debian's headless chromium.

python docs/screenshot.py [OUT.png] [WIDTH]    # needs the test extra (playwright) and /usr/bin/chromium
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from snapbatch.cli.main import EMULATOR_KEY_ID, EMULATOR_KEY_SECRET, main
from snapbatch.emulator import Emulator, EmulatorConfig, running_emulator

ROOT = Path(__file__).resolve().parent.parent
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def cli(*argv: str) -> int:
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": EMULATOR_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": EMULATOR_KEY_SECRET,
        "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
        "HOME": "/nonexistent",
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", tempfile.gettempdir()),
    }
    return main(list(argv), env=env, stdout=io.StringIO(), stderr=sys.stderr)


def main_() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "report.png"
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("jobs.example.yaml", "partner.csv", "catalog"):
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, work / name)
            else:
                shutil.copy(source, work / name)
        manifest = str(work / "jobs.example.yaml")
        # the catalog's last two videos are unknown to this VOD: they fail at submit
        videos: dict[str, str | None] = {
            "d3e680e618708efbf2cae7cc93120001": None,
            "7a1c0d4e2b3f4a5b8c9d0e1f2a3b0002": None,
            **{f"c1b2a3d4e5f60718293a4b5c6d7e000{i}": None for i in (1, 2, 3)},
            **{f"0f0e0d0c0b0a09080706050403020{i:03d}": f"partner-ep-{i:04d}" for i in (1, 2, 3, 4)},
        }
        config = EmulatorConfig(
            credentials={EMULATOR_KEY_ID: (EMULATOR_KEY_SECRET, None)},
            qps=30.0,
            faults={"Throttling.User": 0.15, "ServiceUnavailable": 0.1},
            videos=videos,
            job_seconds=0.0,
            job_fail_rate=0.2,
            seed=4,
            query_only=True,
        )
        emulator = Emulator(config)
        with running_emulator(emulator) as served:
            code = cli("run", manifest, "--endpoint", served.url, "--state", str(work / "s.sqlite3"))
            assert code == 1, f"run exited {code}, expected 1 (two videos unknown)"
            emulator.config.faults = {}
            code = cli("poll", manifest, "--endpoint", served.url, "--state", str(work / "s.sqlite3"), "--qps", "30")
            assert code in (0, 1), f"poll exited {code}"
        html = work / "report.html"
        assert cli("report", manifest, "--state", str(work / "s.sqlite3"), "--html", str(html)) == 0
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(work / "profile"),
                executable_path="/usr/bin/chromium",
                headless=True,
                args=ARGS,
                viewport={"width": width, "height": 800},
            )
            page = context.new_page()
            page.goto(html.as_uri())
            page.screenshot(path=str(out), full_page=True)
            context.close()
    print(f"{out}: {out.stat().st_size / 1000:.0f} kB", file=sys.stderr)


if __name__ == "__main__":
    main_()
