"""The built wheel is a working snapbatch on its own: it carries the schema, and the top-level
`schemas/manifest.schema.json` (for editors) is the very file the wheel ships."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def _clean_copy(dest: Path) -> Path:
    """The committed files only: a build/ or *.egg-info left by an earlier build would hide a packaging
    mistake."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True)
    for name in listed.stdout.decode().split("\0"):
        if name and (ROOT / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name, follow_symlinks=False)
    return dest


def test_wheel_ships_the_schema_and_validates_from_outside_the_checkout(tmp_path: Path) -> None:
    """The wheel built from the committed files carries the schema and validates a manifest far from the
    checkout. Slow by nature: a real `pip wheel` build, about 4 s."""
    source = _clean_copy(tmp_path / "source")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("snapbatch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("snapbatch/schemas/manifest.schema.json")
    assert shipped == (ROOT / "schemas" / "manifest.schema.json").read_bytes()

    # Install the wheel alone (its dependencies come from this environment) and run it far from the
    # checkout, so the schema can only come from the installed package.
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    manifest = tmp_path / "jobs.yaml"
    manifest.write_text("version: 1\nbatch: b\njobs:\n  - {name: j, videos: [v1], params: {Count: 0}}\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import snapbatch, sys; print(snapbatch.__file__); "
            "from snapbatch.cli.main import main; sys.exit(main(['validate', 'jobs.yaml']))",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.stdout.startswith(str(site)), result.stdout
    assert result.returncode == 2, result.stderr
    assert "jobs.yaml:4:" in result.stderr and "Count" in result.stderr, result.stderr
